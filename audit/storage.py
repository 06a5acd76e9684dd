"""The log's files and their format (ADR 0020). Reading helpers shared by the writer, the
verifier, proofs and reports.

    <dir>/entries.jsonl    entry i = canonical JSON (sorted keys, ASCII) + "\\n"
    <dir>/entries.idx      40 bytes per entry: u64 big-endian end offset || leaf hash
    <dir>/checkpoint       the latest signed checkpoint (c2sp.org/tlog-checkpoint)
    <dir>/checkpoint-key.pem, checkpoint.vkey   signing key (0600) and its verifier key
    <dir>/lock             flock(2) target serializing appends across processes
    <dir>/FORMAT           "idmz-audit-log v1"

The Merkle leaf is the entry's JSON bytes without the newline. An entry is acknowledged once
the entries file is fdatasynced; the index is written right after and fsynced with each
checkpoint, and `audit.recovery` rebuilds its tail from the entries after a crash.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from audit.errors import AuditConfigError, LogCorruptedError

FORMAT_LINE = "idmz-audit-log v1\n"
RECORD_BYTES = 40
_END = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class LogPaths:
    directory: Path

    @property
    def entries(self) -> Path:
        return self.directory / "entries.jsonl"

    @property
    def index(self) -> Path:
        return self.directory / "entries.idx"

    @property
    def checkpoint(self) -> Path:
        return self.directory / "checkpoint"

    @property
    def cosigned(self) -> Path:
        """The latest checkpoint with witness cosignatures (``idmz audit witness submit``)."""
        return self.directory / "checkpoint.cosigned"

    @property
    def lock(self) -> Path:
        return self.directory / "lock"

    @property
    def format(self) -> Path:
        return self.directory / "FORMAT"

    def check_format(self) -> None:
        try:
            found = self.format.read_text()
        except FileNotFoundError as exc:
            raise AuditConfigError(f"{self.directory} is not an idmz audit log") from exc
        if found != FORMAT_LINE:
            raise AuditConfigError(f"{self.directory}: unsupported log format {found.strip()!r}")


def pack_record(end_offset: int, leaf: bytes) -> bytes:
    return _END.pack(end_offset) + leaf


def record_end(index: bytes | memoryview, i: int) -> int:
    return int(_END.unpack_from(index, i * RECORD_BYTES)[0])


class LeafHashes(Sequence[bytes]):
    """The leaf hashes of an index file as a read-only sequence (for proof generation)."""

    def __init__(self, index: bytes, size: int | None = None) -> None:
        whole = len(index) // RECORD_BYTES
        self._index = index
        self._size = whole if size is None else min(size, whole)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, key: int) -> bytes: ...

    @overload
    def __getitem__(self, key: slice) -> list[bytes]: ...

    def __getitem__(self, key: int | slice) -> bytes | list[bytes]:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._size)
            if step != 1:
                raise ValueError("only contiguous slices")
            data = self._index
            return [data[o + 8 : o + 40] for o in range(start * 40, stop * 40, 40)]
        if not 0 <= key < self._size:
            raise IndexError(key)
        return self._index[key * 40 + 8 : key * 40 + 40]


def read_index(paths: LogPaths) -> bytes:
    """The index file, cut to whole records (a partial record is a torn, unacked write)."""
    try:
        data = paths.index.read_bytes()
    except FileNotFoundError:
        return b""
    return data[: len(data) - len(data) % RECORD_BYTES]


def read_entry(paths: LogPaths, index_bytes: bytes, i: int) -> bytes:
    """Entry ``i``'s JSON bytes (without the newline), as stored."""
    n = len(index_bytes) // RECORD_BYTES
    if not 0 <= i < n:
        raise LogCorruptedError(f"index {i} is not in the log (size {n})", index=i)
    start = record_end(index_bytes, i - 1) if i else 0
    end = record_end(index_bytes, i)
    with open(paths.entries, "rb") as fh:
        fh.seek(start)
        line = fh.read(end - start)
    if len(line) != end - start or not line.endswith(b"\n"):
        raise LogCorruptedError(f"entry {i} is missing or torn", index=i)
    return line[:-1]


def iter_entries(paths: LogPaths, index_bytes: bytes) -> Iterator[tuple[int, bytes]]:
    """(index, JSON bytes) for every indexed entry, streamed in large reads."""
    n = len(index_bytes) // RECORD_BYTES
    with open(paths.entries, "rb") as fh:
        i, start = 0, 0
        while i < n:
            j = min(n, i + 65536)
            end = record_end(index_bytes, j - 1)
            chunk = fh.read(end - start)
            base = start
            for k in range(i, j):
                e = record_end(index_bytes, k)
                yield k, chunk[start - base : e - base - 1]
                start = e
            i = j


class FileLock:
    """flock(2) on the log's lock file: serializes appends across processes."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock; without ``blocking``, False if another process holds it."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
