"""A bounded, crash-safe, in-order disk spool for messages the IT side has not taken yet.

One append-only file per worker (``spool.dat``) plus a cursor file (``spool.cursor``) holding
the offset up to which the IT broker has acknowledged. Each record is framed and checksummed:

    u32 header_len | u32 payload_len | u32 crc32(header + payload) | header (JSON) | payload

`RecordFile` is that format (the retention log, `relay.retention`, writes it too). ``append``
buffers; ``sync`` writes the buffer and fsyncs, and only after ``sync`` returns may the OT side
be acknowledged for those messages. A torn tail left by a crash (a record cut short) is
truncated on open; a checksum mismatch anywhere else raises `SpoolCorruptedError` instead of
skipping data silently. The cursor is written without fsync: losing it after a power cut
re-sends records the IT side already has (duplicates carry the same ``idmz-msg-id``), it never
skips one. When everything is acknowledged the file is truncated to zero.

`Spool.prepend` puts records back in front of everything pending (the retention log's copy of
what an IT broker that lost its state may have lost, ADR 0080), so they leave first.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bedrock.files import fsync_dir, write_atomic
from relay.errors import SpoolCorruptedError, SpoolFullError

_FRAME = struct.Struct(">III")


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    topic: str
    device: str
    msg_id: str
    properties: tuple[tuple[str, str], ...]
    payload: bytes


def encode_record(rec: SpoolRecord) -> bytes:
    return encode_fields(rec.topic, rec.device, rec.msg_id, rec.properties, rec.payload)


def encode_fields(
    topic: str,
    device: str,
    msg_id: str,
    properties: tuple[tuple[str, str], ...],
    payload: bytes,
) -> bytes:
    """One framed record. The header is a NUL marker and the record's strings joined by NUL
    (cheap: every forwarded message is written to the retention log); JSON when a string holds
    a NUL or cannot be UTF-8 (never for what the inspector accepts; the format must not break)."""
    fields = ["", topic, device, msg_id]
    for pair in properties:
        fields += pair
    text = "\0".join(fields)
    try:
        if text.count("\0") != len(fields) - 1:
            raise ValueError("a field holds NUL")
        header = text.encode()
    except (ValueError, UnicodeEncodeError):
        header = json.dumps(
            {"t": topic, "d": device, "i": msg_id, "p": properties}, separators=(",", ":")
        ).encode()
    crc = zlib.crc32(payload, zlib.crc32(header))
    return b"".join((_FRAME.pack(len(header), len(payload), crc), header, payload))


def _decode_header(raw: bytes) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    if raw[:1] == b"\0":
        f = raw[1:].decode().split("\0")
        return f[0], f[1], f[2], tuple(zip(f[3::2], f[4::2], strict=True))
    h = json.loads(raw)
    return h["t"], h["d"], h["i"], tuple((str(k), str(v)) for k, v in h["p"])


class RecordFile:
    """An append-only file of framed, checksummed records. Not thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._buffer = bytearray()
        self.end = self._recover()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    @property
    def dirty(self) -> bool:
        return bool(self._buffer)

    def append(self, data: bytes) -> None:
        """Buffer one encoded record (`encode_record`); durable after `sync`."""
        self._buffer += data

    def sync(self) -> None:
        """Write buffered records and fdatasync (an append-only file: the data and its size
        are what must survive a crash, not its times)."""
        if self._buffer:
            _write_all(self._fd, bytes(self._buffer))
            self.end += len(self._buffer)
            self._buffer.clear()
        os.fdatasync(self._fd)

    def read(self, offset: int, max_records: int) -> list[tuple[int, SpoolRecord]]:
        """Up to ``max_records`` durable records starting at ``offset``, each with the offset
        just past it."""
        out: list[tuple[int, SpoolRecord]] = []
        while offset < self.end and len(out) < max_records:
            hlen, plen, crc = _FRAME.unpack(os.pread(self._fd, _FRAME.size, offset))
            body = os.pread(self._fd, hlen + plen, offset + _FRAME.size)
            if len(body) != hlen + plen or zlib.crc32(body) != crc:
                raise SpoolCorruptedError(f"{self.path}: bad record at offset {offset}")
            topic, device, msg_id, props = _decode_header(body[:hlen])
            offset += _FRAME.size + hlen + plen
            out.append((offset, SpoolRecord(topic, device, msg_id, props, bytes(body[hlen:]))))
        return out

    def truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        self.end = 0

    def close(self) -> None:
        os.close(self._fd)

    def _recover(self) -> int:
        size = os.fstat(self._fd).st_size
        offset = 0
        while offset + _FRAME.size <= size:
            hlen, plen, _crc = _FRAME.unpack(os.pread(self._fd, _FRAME.size, offset))
            nxt = offset + _FRAME.size + hlen + plen
            if nxt > size:
                break
            offset = nxt
        if offset != size:  # a torn tail: the record was never acknowledged on the OT side
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
        return offset


class Spool:
    """Not thread-safe; the worker serializes access under its own lock."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = directory / "spool.dat"
        self._cursor_path = directory / "spool.cursor"
        self.max_bytes = max_bytes
        self._file = RecordFile(self._path)
        self.generation = 0  # +1 whenever the file starts again (offsets are reused)
        self.cursor = self._read_cursor()
        if self.cursor > self.end:
            self.cursor = 0 if self.end == 0 else self.cursor
            if self.cursor > self.end:
                raise SpoolCorruptedError(
                    f"spool cursor {self.cursor} is past the end of {self._path} ({self.end})"
                )

    # -- state --------------------------------------------------------------------------

    @property
    def end(self) -> int:
        return self._file.end

    @property
    def pending_bytes(self) -> int:
        """Bytes spooled (durable or buffered) and not yet acknowledged by IT."""
        return self.end - self.cursor + self._file.buffered_bytes

    @property
    def empty(self) -> bool:
        return self.pending_bytes == 0

    @property
    def dirty(self) -> bool:
        return self._file.dirty

    # -- writing ------------------------------------------------------------------------

    def append(self, rec: SpoolRecord) -> None:
        data = encode_record(rec)
        if self.pending_bytes + len(data) > self.max_bytes:
            raise SpoolFullError(
                f"spool {self._path} holds {self.pending_bytes} bytes; a {len(data)}-byte record "
                f"would pass spool_max_bytes={self.max_bytes}"
            )
        self._file.append(data)

    def sync(self) -> None:
        """Write buffered records and fsync: after this they survive a crash."""
        self._file.sync()

    def prepend(self, records: Iterable[SpoolRecord]) -> int:
        """Put ``records`` in front of every pending record (durably; above ``max_bytes`` if
        need be: new appends then wait until it drains). Returns how many were put back.

        A new file holds them followed by the pending ones; the cursor is reset to 0 *before*
        the file is replaced, so a crash in between re-sends acknowledged records of the old
        file (duplicates), never skips one."""
        self._file.sync()
        tmp = self._path.with_name("spool.new")
        count = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for rec in records:
                _write_all(fd, encode_record(rec))
                count += 1
            offset = self.cursor
            while offset < self.end:
                batch = self._file.read(offset, 256)
                _write_all(fd, b"".join(encode_record(rec) for _end, rec in batch))
                offset = batch[-1][0]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._write_cursor(0, durable=True)  # an old cursor must never index the new file
        os.replace(tmp, self._path)
        fsync_dir(self._path.parent)
        self._file.close()
        self._file = RecordFile(self._path)
        self.cursor = 0
        self.generation += 1
        return count

    # -- reading ------------------------------------------------------------------------

    def read(self, offset: int, max_records: int) -> list[tuple[int, SpoolRecord]]:
        """Up to ``max_records`` durable records starting at ``offset``, each with the offset
        just past it (pass that to `commit`)."""
        return self._file.read(offset, max_records)

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` is acknowledged by IT."""
        if offset <= self.cursor:
            return
        self.cursor = offset
        if self.cursor == self.end and not self._file.dirty:
            self._file.truncate()
            self.cursor = 0
            self.generation += 1
        self._write_cursor(self.cursor)

    def records(self) -> list[SpoolRecord]:
        """Every durable, unacknowledged record (used once at start to rebuild counters)."""
        return [rec for _, rec in self.read(self.cursor, 1 << 62)]

    def close(self) -> None:
        self._file.close()

    # -- cursor -------------------------------------------------------------------------

    def _write_cursor(self, value: int, *, durable: bool = False) -> None:
        # Not durable by default: a cursor lost in a crash only re-forwards acknowledged
        # records, duplicates the IT side can detect (ADR 0050: at-least-once, never a loss).
        write_atomic(self._cursor_path, str(value).encode(), 0o600, durable=durable)

    def _read_cursor(self) -> int:
        try:
            return int(self._cursor_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise SpoolCorruptedError(f"spool cursor {self._cursor_path} is not a number") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
