"""`AuditLog`: the durable, tamper-evident `AuditSink`.

    >>> with AuditLog.open(home / "audit", origin="plant1.example/idmz-audit") as log:
    ...     receipt = log.record(AuditEvent("op", "operator.note", "-", Outcome.SUCCESS, "why"))

``record`` returns only after the entry is written and fsynced. Concurrent callers share
fsyncs (group commit, ADR 0021): the first waiting thread becomes the writer, appends every
pending entry under the cross-process ``flock`` (ADR 0022), hands the writer role on, and only
then waits for its ``fdatasync``; so the next batch is being written while the previous one
is being flushed. Batches are acknowledged in order, and none after a failed flush. The log
stamps ``seq`` (the Merkle leaf index), ``time``, ``time_source`` and ``host``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.entry import EncodedEvent, encode_event
from audit.errors import AuditUnavailableError, InvalidEventError
from audit.events import AuditEvent, AuditReceipt
from audit.keys import log_signer
from audit.limits import AuditLimits, CapacityReport, Clock, SystemClock
from audit.storage import FORMAT_LINE, LogPaths, fsync_dir, write_atomically
from audit.writer import LogWriter, PendingEntry

_log = logging.getLogger("audit")


@dataclass(frozen=True, slots=True)
class LogStats:
    """This process's writes: ``batches`` group commits carried ``entries`` entries."""

    entries: int
    batches: int


class AuditLog:
    """Append-only audit log in one directory. Use `AuditLog.open`; close it (or use it as a
    context manager) to write a final checkpoint."""

    def __init__(self, writer: LogWriter, *, host: str) -> None:
        self.host = host
        self._writer = writer
        self._cv = threading.Condition()
        self._pending: list[PendingEntry] = []
        self._writing = False  # a thread holds the writer role
        self._next_ticket = 0  # batches are numbered as they are written ...
        self._finished_ticket = 0  # ... and acknowledged in that order
        self._closed = False
        self._broken: BaseException | None = None
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

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
        ``checkpoint-key.pem`` in the directory, generated (0600) on first open. After a crash
        the index is repaired, a torn tail cut, and a checkpoint covering every durable entry
        written. ``background_checkpoints`` signs one every ``checkpoint_interval_s`` if the
        log grew."""
        directory = Path(directory)
        new = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if new:
            fsync_dir(directory.parent)
        paths = LogPaths(directory)
        if not paths.format.exists():
            write_atomically(paths.format, FORMAT_LINE.encode())
        paths.check_format()
        writer = LogWriter(
            paths,
            log_signer(directory, origin, key),
            clock=clock or SystemClock(),
            limits=limits or AuditLimits(),
            on_capacity=on_capacity,
        )
        try:
            with writer.lock():
                writer.catch_up(recover=True)
                if writer.shared.checkpoint_size != writer.shared.size:
                    writer.write_checkpoint()
        except BaseException:
            writer.close()
            raise
        log = cls(writer, host=host or socket.gethostname())
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
        """Stop accepting events, finish batches in flight, write a final checkpoint."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
            while self._writing or self._finished_ticket != self._next_ticket:
                self._cv.wait()
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        try:
            if self._broken is None:
                self._checkpoint_now()
        finally:
            self._writer.close()

    @property
    def paths(self) -> LogPaths:
        return self._writer.paths

    @property
    def limits(self) -> AuditLimits:
        return self._writer.limits

    @property
    def size(self) -> int:
        """Entries this process has seen in the log (others may have appended since)."""
        return self._writer.shared.size

    @property
    def stats(self) -> LogStats:
        return LogStats(*self._writer.written)

    # -- recording ----------------------------------------------------------------------

    def record(self, event: AuditEvent) -> AuditReceipt:
        """Append ``event``; return once it is durable. Raises `AuditUnavailableError` when
        it cannot be recorded (nothing of it is acknowledged) and `InvalidEventError` for an
        event that can never be recorded."""
        entry = PendingEntry(self._encode(event))
        with self._cv:
            self._pending.append(entry)
            while not entry.done:
                if self._closed and entry in self._pending:
                    self._pending.remove(entry)
                    raise AuditUnavailableError("the audit log is closed")
                if self._writing or not self._pending:
                    self._cv.wait()
                    continue
                self._writing = True
                batch = self._pending[: self.limits.max_batch_entries]
                del self._pending[: len(batch)]
                self._write_and_sync(batch)
        if entry.error is not None:
            raise entry.error
        assert entry.receipt is not None
        return entry.receipt

    def record_batch(self, events: Sequence[AuditEvent]) -> list[AuditReceipt]:
        """Append ``events`` as consecutive entries (``max_batch_entries`` per flush) and
        return their receipts once all are durable. On failure the error is raised; entries
        of earlier chunks stay recorded."""
        entries = [PendingEntry(self._encode(e)) for e in events]
        step = self.limits.max_batch_entries
        for i in range(0, len(entries), step):
            chunk = entries[i : i + step]
            with self._cv:
                while self._writing and not self._closed:
                    self._cv.wait()
                if self._closed:
                    raise AuditUnavailableError("the audit log is closed")
                self._writing = True
                self._write_and_sync(chunk)
            for entry in chunk:
                if entry.error is not None:
                    raise entry.error
        return [e.receipt for e in entries if e.receipt is not None]

    def _encode(self, event: AuditEvent) -> EncodedEvent:
        encoded = encode_event(event, self.host)
        size = len(encoded.head) + len(encoded.tail) + 80  # + seq, time, time source
        if size > self.limits.max_entry_bytes:
            raise InvalidEventError(
                f"entry would be about {size} bytes (max {self.limits.max_entry_bytes})"
            )
        return encoded

    def _write_and_sync(self, batch: list[PendingEntry]) -> None:
        """Called holding ``_cv`` with the writer role taken; returns holding ``_cv`` once
        ``batch`` is acknowledged or failed."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._cv.release()
        try:
            wrote = self._write(batch)
        finally:
            self._cv.acquire()
            self._writing = False  # the next batch may be written while this one flushes
            self._cv.notify_all()
        sync_error: OSError | None = None
        if wrote:
            self._cv.release()
            try:
                self._writer.sync()
            except OSError as exc:
                sync_error = exc
            finally:
                self._cv.acquire()
        while self._finished_ticket != ticket:
            self._cv.wait()
        if sync_error is not None and self._broken is None:
            # After a failed fsync the page cache state is unknown (fsyncgate): stop here,
            # and acknowledge nothing written after it either.
            _log.error("audit log: fdatasync failed, refusing further writes: %s", sync_error)
            self._broken = sync_error
        for entry in batch:
            if not entry.done:
                if self._broken is not None:
                    entry.receipt = None
                    entry.error = AuditUnavailableError(
                        f"audit entry not recorded (flush failed: {self._broken})"
                    )
                entry.done = True
        self._finished_ticket += 1
        self._cv.notify_all()

    def _write(self, batch: list[PendingEntry]) -> bool:
        """Append ``batch`` under the flock; True if bytes were written (need a flush)."""
        try:
            if self._broken is not None:
                raise AuditUnavailableError(
                    "the audit log stopped after a write failure; reopen it after checking the disk"
                ) from self._broken
            with self._writer.lock():
                self._writer.catch_up(recover=False)
                wrote = self._writer.append(batch)
                self._writer.checkpoint_if_due()
            return wrote
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            error = exc
            if not isinstance(exc, AuditUnavailableError | InvalidEventError):
                error = AuditUnavailableError(f"audit entry not recorded: {exc}")
                error.__cause__ = exc
            for entry in batch:
                if not entry.done and entry.receipt is None:
                    entry.error, entry.done = error, True
            return any(entry.receipt is not None for entry in batch)

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Sign and write a checkpoint of the whole log now; returns the signed note."""
        with self._cv:
            if self._closed:
                raise AuditUnavailableError("the audit log is closed")
        return self._checkpoint_now()

    def _checkpoint_now(self) -> str:
        with self._cv:
            while self._writing:
                self._cv.wait()
            self._writing = True
        try:
            with self._writer.lock():
                self._writer.catch_up(recover=False)
                return self._writer.write_checkpoint()
        finally:
            with self._cv:
                self._writing = False
                self._cv.notify_all()

    def _checkpoint_loop(self) -> None:
        interval = self.limits.checkpoint_interval_s
        shared = self._writer.shared
        while not self._stop.wait(interval):
            try:
                if shared.size != shared.checkpoint_size and self._broken is None:
                    self.checkpoint()
            except AuditUnavailableError:
                return  # closed
            except Exception:  # noqa: BLE001 - keep the timer alive; record() reports failures
                _log.exception("audit log: periodic checkpoint failed")
