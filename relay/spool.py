"""A bounded, crash-safe, in-order disk spool for messages the IT side has not taken yet.

One append-only file per worker (``spool.dat``) plus a cursor file (``spool.cursor``) holding
the offset up to which the IT broker has acknowledged. Each record is framed and checksummed:

    u32 header_len | u32 payload_len | u32 crc32(header + payload) | header (JSON) | payload

``append`` buffers; ``sync`` writes the buffer and fsyncs, and only after ``sync`` returns may
the OT side be acknowledged for those messages. A torn tail left by a crash (a record cut
short) is truncated on open; a checksum mismatch anywhere else raises `SpoolCorruptedError`
instead of skipping data silently. The cursor is written without fsync: losing it after a power
cut re-sends records the IT side already has (duplicates carry the same ``idmz-msg-id``), it
never skips one. When everything is acknowledged the file is truncated to zero.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from bedrock.files import write_atomic
from relay.errors import SpoolCorruptedError, SpoolFullError

_FRAME = struct.Struct(">III")


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    topic: str
    device: str
    msg_id: str
    properties: tuple[tuple[str, str], ...]
    payload: bytes


def _encode(rec: SpoolRecord) -> bytes:
    header = json.dumps(
        {"t": rec.topic, "d": rec.device, "i": rec.msg_id, "p": rec.properties},
        separators=(",", ":"),
    ).encode()
    crc = zlib.crc32(header + rec.payload)
    return _FRAME.pack(len(header), len(rec.payload), crc) + header + rec.payload


class Spool:
    """Not thread-safe; the worker serializes access under its own lock."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._path = directory / "spool.dat"
        self._cursor_path = directory / "spool.cursor"
        self.max_bytes = max_bytes
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._buffer = bytearray()
        self.cursor = self._read_cursor()
        self.end = self._recover()
        if self.cursor > self.end:
            self.cursor = 0 if self.end == 0 else self.cursor
            if self.cursor > self.end:
                raise SpoolCorruptedError(
                    f"spool cursor {self.cursor} is past the end of {self._path} ({self.end})"
                )

    # -- state --------------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        """Bytes spooled (durable or buffered) and not yet acknowledged by IT."""
        return self.end - self.cursor + len(self._buffer)

    @property
    def empty(self) -> bool:
        return self.pending_bytes == 0

    @property
    def dirty(self) -> bool:
        return bool(self._buffer)

    # -- writing ------------------------------------------------------------------------

    def append(self, rec: SpoolRecord) -> None:
        data = _encode(rec)
        if self.pending_bytes + len(data) > self.max_bytes:
            raise SpoolFullError(
                f"spool {self._path} holds {self.pending_bytes} bytes; a {len(data)}-byte record "
                f"would pass spool_max_bytes={self.max_bytes}"
            )
        self._buffer += data

    def sync(self) -> None:
        """Write buffered records and fsync: after this they survive a crash."""
        if self._buffer:
            data = bytes(self._buffer)
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            self.end += len(data)
            self._buffer.clear()
        os.fsync(self._fd)

    # -- reading ------------------------------------------------------------------------

    def read(self, offset: int, max_records: int) -> list[tuple[int, SpoolRecord]]:
        """Up to ``max_records`` durable records starting at ``offset``, each with the offset
        just past it (pass that to `commit`)."""
        out: list[tuple[int, SpoolRecord]] = []
        while offset < self.end and len(out) < max_records:
            frame = os.pread(self._fd, _FRAME.size, offset)
            hlen, plen, crc = _FRAME.unpack(frame)
            body = os.pread(self._fd, hlen + plen, offset + _FRAME.size)
            if len(body) != hlen + plen or zlib.crc32(body) != crc:
                raise SpoolCorruptedError(f"spool {self._path}: bad record at offset {offset}")
            header = json.loads(body[:hlen])
            offset += _FRAME.size + hlen + plen
            out.append(
                (
                    offset,
                    SpoolRecord(
                        header["t"],
                        header["d"],
                        header["i"],
                        tuple((str(k), str(v)) for k, v in header["p"]),
                        bytes(body[hlen:]),
                    ),
                )
            )
        return out

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` is acknowledged by IT."""
        if offset <= self.cursor:
            return
        self.cursor = offset
        if self.cursor == self.end and not self._buffer:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self.cursor = self.end = 0
        # Not durable: a cursor lost in a crash only re-forwards acknowledged records, which are
        # duplicates the IT side can detect (ADR 0050: at-least-once, never a loss).
        write_atomic(self._cursor_path, str(self.cursor).encode(), durable=False)

    def records(self) -> list[SpoolRecord]:
        """Every durable, unacknowledged record (used once at start to rebuild counters)."""
        return [rec for _, rec in self.read(self.cursor, 1 << 62)]

    def close(self) -> None:
        os.close(self._fd)

    # -- recovery -----------------------------------------------------------------------

    def _read_cursor(self) -> int:
        try:
            return int(self._cursor_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise SpoolCorruptedError(f"spool cursor {self._cursor_path} is not a number") from exc

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
