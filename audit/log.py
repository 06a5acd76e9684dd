"""`AuditLog`: the durable, tamper-evident `AuditSink`.

    >>> with AuditLog.open(home / "audit", origin="plant1.example/idmz-audit") as log:
    ...     receipt = log.record(AuditEvent("op", "operator.note", "-", Outcome.SUCCESS, "why"))

``record`` returns only after the entry is written and fsynced. Concurrent callers share
fsyncs (group commit: the first waiting thread leads and writes everyone's entries under one
fsync pair; the others wait for it, ADR 0021). Several processes may append to the same
directory: each batch is written under ``flock(lock)``, after the process catches up with the
entries other processes appended (read from the fixed-size index, ADR 0022). The log stamps
``seq`` (the Merkle leaf index), ``time``, ``time_source`` and ``host``; callers cannot.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.entry import EncodedEvent, encode_event, encode_stamp
from audit.errors import (
    AuditConfigError,
    AuditUnavailableError,
    InvalidEventError,
    LogCorruptedError,
)
from audit.events import AuditEvent, AuditReceipt
from audit.keys import log_signer
from audit.limits import (
    AuditLimits,
    CapacityReport,
    CapacityState,
    Clock,
    SystemClock,
    assess_capacity,
)
from audit.merkle import TreeBuilder, leaf_hash
from audit.note import NoteSigner
from audit.recovery import first_bad_record, index_tail
from audit.storage import (
    FORMAT_LINE,
    RECORD_BYTES,
    FileLock,
    LeafHashes,
    LogPaths,
    fsync_dir,
    pack_record,
    pwrite_all,
    record_end,
    write_atomically,
)

_log = logging.getLogger("audit")


@dataclass(frozen=True, slots=True)
class LogStats:
    """This process's writes: ``batches`` fsync pairs carried ``entries`` entries."""

    entries: int
    batches: int


@dataclass(eq=False)
class _Slot:
    encoded: EncodedEvent
    receipt: AuditReceipt | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class _Shared:
    """What this process knows of the log on disk (read under the flock)."""

    size: int = 0
    end_offset: int = 0
    tree: TreeBuilder = field(default_factory=TreeBuilder)
    checkpoint_size: int = -1
    checkpoint_mtime_ns: int = 0


class AuditLog:
    """Append-only audit log in one directory. Use `AuditLog.open`; close it (or use it as a
    context manager) to write a final checkpoint."""

    def __init__(
        self,
        paths: LogPaths,
        signer: NoteSigner,
        *,
        clock: Clock,
        limits: AuditLimits,
        host: str,
        on_capacity: Callable[[CapacityReport], None] | None,
    ) -> None:
        self.paths = paths
        self.signer = signer
        self.clock = clock
        self.limits = limits
        self.host = host
        self._on_capacity = on_capacity
        self._lock_fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        self._entries_fd = os.open(paths.entries, os.O_RDWR | os.O_CREAT, 0o640)
        self._index_fd = os.open(paths.index, os.O_RDWR | os.O_CREAT, 0o640)
        self._shared = _Shared()
        self._cv = threading.Condition()
        self._pending: list[_Slot] = []
        self._leading = False
        self._closed = False
        self._broken: BaseException | None = None
        self._capacity_state = CapacityState.OK
        self._capacity_at = -1e9  # monotonic time of the last statvfs
        self._capacity_spent = 0  # bytes written since
        self._capacity_slack = 0  # bytes that may be written before checking again
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._written = (0, 0)  # (entries, batches)

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        origin: str,
        key: Ed25519PrivateKey | None = None,
        clock: Clock | None = None,
        limits: AuditLimits | None = None,
        host: str | None = None,
        on_capacity: Callable[[CapacityReport], None] | None = None,
        background_checkpoints: bool = True,
    ) -> AuditLog:
        """Open (creating if needed) the log in ``directory``. ``origin`` names the log in
        checkpoints (e.g. ``plant1.example/idmz-audit``). Without ``key`` the signing key is
        ``checkpoint-key.pem`` in the directory, generated (0600) on first open. A torn tail
        left by a crash is truncated and a checkpoint covering every durable entry is written.
        """
        directory = Path(directory)
        new = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if new:
            fsync_dir(directory.parent)
        paths = LogPaths(directory)
        if not paths.format.exists():
            write_atomically(paths.format, FORMAT_LINE.encode())
        paths.check_format()
        signer = log_signer(directory, origin, key)
        log = cls(
            paths,
            signer,
            clock=clock or SystemClock(),
            limits=limits or AuditLimits(),
            host=host or socket.gethostname(),
            on_capacity=on_capacity,
        )
        try:
            with log._flock():
                log._catch_up(recover=True)
                if log._shared.checkpoint_size != log._shared.size:
                    log._write_checkpoint()
        except BaseException:
            log._close_fds()
            raise
        if background_checkpoints:
            log._timer = threading.Thread(target=log._checkpoint_loop, daemon=True)
            log._timer.start()
        return log

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting events, write a final checkpoint, release the files."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            while self._leading:
                self._cv.wait()
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        try:
            if self._broken is None:
                self.checkpoint()
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._entries_fd, self._index_fd, self._lock_fd):
            os.close(fd)

    # -- recording ----------------------------------------------------------------------

    def record(self, event: AuditEvent) -> AuditReceipt:
        """Append ``event``; return once it is durable. Raises `AuditUnavailableError` when
        it cannot be recorded (then nothing of it is in the log) and `InvalidEventError`
        for an event that can never be recorded."""
        slot = _Slot(self._encode(event))
        with self._cv:
            self._pending.append(slot)
            while not slot.done:
                if self._closed:
                    self._pending.remove(slot)
                    raise AuditUnavailableError("the audit log is closed")
                if self._leading:
                    self._cv.wait()
                    continue
                # Lead: write every pending entry (up to the batch limit) under one fsync.
                self._leading = True
                batch = self._pending[: self.limits.max_batch_entries]
                del self._pending[: len(batch)]
                self._cv.release()
                try:
                    self._commit(batch)
                finally:
                    self._cv.acquire()
                    self._leading = False
                    self._cv.notify_all()
        if slot.error is not None:
            raise slot.error
        assert slot.receipt is not None
        return slot.receipt

    def _encode(self, event: AuditEvent) -> EncodedEvent:
        encoded = encode_event(event, self.host)
        size = len(encoded.head) + len(encoded.tail) + 80  # + seq, time, time source
        if size > self.limits.max_entry_bytes:
            raise InvalidEventError(
                f"entry would be about {size} bytes (max {self.limits.max_entry_bytes})"
            )
        return encoded

    def record_batch(self, events: Sequence[AuditEvent]) -> list[AuditReceipt]:
        """Append ``events`` as consecutive entries (up to ``max_batch_entries`` per fsync
        pair) and return their receipts once all are durable. If a chunk fails, the error
        is raised; entries of earlier chunks stay recorded (their indexes are contiguous)."""
        slots = [_Slot(self._encode(e)) for e in events]
        with self._cv:
            while self._leading and not self._closed:
                self._cv.wait()
            if self._closed:
                raise AuditUnavailableError("the audit log is closed")
            self._leading = True
        try:
            step = self.limits.max_batch_entries
            for i in range(0, len(slots), step):
                self._commit(slots[i : i + step])
                for slot in slots[i : i + step]:
                    if slot.error is not None:
                        raise slot.error
        finally:
            with self._cv:
                self._leading = False
                self._cv.notify_all()
        return [slot.receipt for slot in slots if slot.receipt is not None]

    def _commit(self, batch: list[_Slot]) -> None:
        try:
            if self._broken is not None:
                raise AuditUnavailableError(
                    "the audit log stopped after a write failure; reopen it after checking the disk"
                ) from self._broken
            with self._flock():
                self._catch_up(recover=False)
                self._append(batch)
                self._checkpoint_if_due()
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            error = exc
            if not isinstance(exc, AuditUnavailableError | InvalidEventError):
                error = AuditUnavailableError(f"audit entry not recorded: {exc}")
                error.__cause__ = exc
            for slot in batch:
                if not slot.done:
                    slot.error, slot.done = error, True
        else:
            for slot in batch:
                slot.done = True

    def _append(self, batch: list[_Slot]) -> None:
        shared = self._shared
        now = self.clock.now()
        stamp = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
        if now.utcoffset() is None or now.utcoffset():
            raise AuditConfigError("the audit clock must return aware UTC datetimes")
        stamp_json = encode_stamp(stamp, self.clock.source())
        lines: list[bytes] = []
        records: list[bytes] = []
        accepted: list[tuple[_Slot, int, bytes]] = []
        end = shared.end_offset
        seq = shared.size
        for slot in batch:
            data = slot.encoded.entry(seq, stamp_json)
            if len(data) + 1 > self.limits.max_entry_bytes:
                slot.error = InvalidEventError(
                    f"entry would be {len(data) + 1} bytes (max {self.limits.max_entry_bytes})"
                )
                slot.done = True
                continue
            h = leaf_hash(data)
            end += len(data) + 1
            lines.append(data + b"\n")
            records.append(pack_record(end, h))
            accepted.append((slot, seq, h))
            seq += 1
        if not accepted:
            return
        blob = b"".join(lines)
        self._check_capacity(len(blob) + RECORD_BYTES * len(records))
        try:
            pwrite_all(self._entries_fd, blob, shared.end_offset)
            os.fdatasync(self._entries_fd)
        except OSError as exc:
            # After a failed fsync the page cache state is unknown (fsyncgate): stop here.
            self._broken = exc
            raise AuditUnavailableError(
                f"audit entries {shared.size}..{seq - 1} not recorded: {exc}"
            ) from exc
        try:
            # Not fsynced here: the entries are the durable record; the index is made
            # durable with each checkpoint and repaired from the entries after a crash.
            pwrite_all(self._index_fd, b"".join(records), shared.size * RECORD_BYTES)
        except OSError as exc:
            _log.warning("audit log: index write failed (%s); it is rebuilt on open", exc)
        for slot, index, h in accepted:
            shared.tree.append(h)
            slot.receipt = AuditReceipt(index=index, leaf_hash=h)
        shared.size = seq
        shared.end_offset = end
        self._written = (self._written[0] + len(accepted), self._written[1] + 1)

    def _check_capacity(self, batch_bytes: int) -> None:
        # statvfs at most every 0.25 s while far from the thresholds; every batch near them.
        mono = time.monotonic()
        self._capacity_spent += batch_bytes
        if mono - self._capacity_at < 0.25 and self._capacity_spent < self._capacity_slack:
            return
        log_bytes = self._shared.end_offset + self._shared.size * RECORD_BYTES
        report = assess_capacity(self.limits, self.paths.directory, log_bytes, batch_bytes)
        self._capacity_at, self._capacity_spent = mono, 0
        self._capacity_slack = max(
            0, (report.headroom_bytes - self.limits.space_left_bytes - batch_bytes) // 2
        )
        if report.state is not self._capacity_state:
            self._capacity_state = report.state
            level = logging.INFO if report.state is CapacityState.OK else logging.ERROR
            _log.log(level, report.message)
            if self._on_capacity is not None:
                self._on_capacity(report)
        if report.state is CapacityState.ADMIN_SPACE_LEFT:
            raise AuditUnavailableError(
                f"audit log refuses to record entry {self._shared.size}: {report.message}"
            )

    # -- multi-process state ------------------------------------------------------------

    def _flock(self) -> FileLock:
        return FileLock(self._lock_fd)

    def _catch_up(self, *, recover: bool) -> None:
        """Learn what other processes appended, from the index (call under the flock). With
        ``recover`` (on open), also repair the index after a crash (audit.recovery)."""
        shared = self._shared
        if recover:
            self._read_checkpoint_size()
        index_size = os.fstat(self._index_fd).st_size
        n = index_size // RECORD_BYTES
        if n < shared.size:
            raise LogCorruptedError(
                f"the index shrank from {shared.size} to {n} entries while open", index=n
            )
        if recover or index_size % RECORD_BYTES:
            index = os.pread(self._index_fd, n * RECORD_BYTES, 0)
            good = first_bad_record(self._entries_fd, index, max(shared.checkpoint_size, 0))
            if good < n or index_size % RECORD_BYTES:
                _log.warning("audit log: index cut to %d records after a crash", good)
                os.ftruncate(self._index_fd, good * RECORD_BYTES)
                n = good
        if n > shared.size:
            start = shared.size * RECORD_BYTES
            new = os.pread(self._index_fd, (n - shared.size) * RECORD_BYTES, start)
            shared.tree.extend(LeafHashes(new)[:])
            shared.size = n
            shared.end_offset = record_end(new, len(new) // RECORD_BYTES - 1)
        entries_size = os.fstat(self._entries_fd).st_size
        if entries_size < shared.end_offset:
            raise LogCorruptedError(
                f"entries file ends at byte {entries_size} but entry {shared.size - 1} ends at "
                f"{shared.end_offset}: acknowledged entries are missing; run idmz audit verify",
                index=shared.size - 1,
            )
        if entries_size > shared.end_offset:
            # Durable entries whose index records were lost are kept and indexed; a partial
            # line from a write that was never acknowledged is cut.
            records, hashes, end = index_tail(self._entries_fd, shared.end_offset, shared.size)
            if records:
                pwrite_all(self._index_fd, records, shared.size * RECORD_BYTES)
                shared.tree.extend(hashes)
                shared.size += len(hashes)
                shared.end_offset = end
            if entries_size > end:
                _log.warning(
                    "audit log: dropping %d bytes of unacknowledged torn tail after entry %d",
                    entries_size - end,
                    shared.size - 1,
                )
                os.ftruncate(self._entries_fd, end)

    def _read_checkpoint_size(self) -> None:
        shared = self._shared
        try:
            mtime = os.stat(self.paths.checkpoint).st_mtime_ns
        except FileNotFoundError:
            shared.checkpoint_size, shared.checkpoint_mtime_ns = -1, 0
            return
        if mtime != shared.checkpoint_mtime_ns:
            lines = self.paths.checkpoint.read_text().split("\n")
            shared.checkpoint_size = int(lines[1]) if len(lines) > 2 else -1
            shared.checkpoint_mtime_ns = mtime

    # -- checkpoints --------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries this process knows are durable (others may have appended since)."""
        return self._shared.size

    @property
    def stats(self) -> LogStats:
        return LogStats(*self._written)

    def checkpoint(self) -> str:
        """Sign and write a checkpoint of the whole log now; returns the signed note."""
        with self._cv:
            while self._leading:
                self._cv.wait()
            self._leading = True
        try:
            with self._flock():
                self._catch_up(recover=False)
                return self._write_checkpoint()
        finally:
            with self._cv:
                self._leading = False
                self._cv.notify_all()

    def _checkpoint_if_due(self) -> None:
        shared = self._shared
        if shared.size == shared.checkpoint_size:
            return
        every = self.limits.checkpoint_every_entries
        if shared.size - max(shared.checkpoint_size, 0) >= every:
            self._read_checkpoint_size()  # another process may have written one
            if shared.size - max(shared.checkpoint_size, 0) >= every:
                self._write_checkpoint()

    def _write_checkpoint(self) -> str:
        shared = self._shared
        os.fdatasync(self._index_fd)  # the index up to a checkpoint never needs repair
        note = sign_checkpoint(
            Checkpoint(self.signer.name, shared.size, shared.tree.root()), self.signer
        )
        write_atomically(self.paths.checkpoint, note.encode())
        self._read_checkpoint_size()
        return note

    def _checkpoint_loop(self) -> None:
        interval = self.limits.checkpoint_interval_s
        while not self._stop.wait(interval):
            try:
                with self._cv:
                    if self._closed:
                        return
                if self._shared.size != self._shared.checkpoint_size and self._broken is None:
                    self.checkpoint()
            except Exception:  # noqa: BLE001 - keep the timer alive; record() reports failures
                _log.exception("audit log: periodic checkpoint failed")
