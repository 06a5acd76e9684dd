"""`AuditLog`: the durable, tamper-evident `AuditSink`.

    >>> with AuditLog.open(home / "audit", origin="plant1.example/idmz-audit") as log:
    ...     receipt = log.record(AuditEvent("op", "operator.note", "-", Outcome.SUCCESS, "why"))

``record`` returns only after the entry is written and fsynced. Concurrent callers share
fsyncs (group commit, ADR 0021): a writer thread appends every pending entry under the
cross-process ``flock`` (ADR 0022) and hands the batch to a flusher thread, which
``fdatasync``s once for every batch written since its last flush and wakes exactly the
callers whose entries that covered (each sleeps on its own plain lock). The next batch is written while the previous one
flushes; batches are acknowledged in order, and none after a failed flush. The log stamps
``seq`` (the Merkle leaf index), ``time``, ``time_source`` and ``host``. Open the log after
forking worker processes, not before (threads do not survive ``fork``).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.entry import EncodedEvent, encode_event
from audit.errors import AuditConfigError, AuditUnavailableError, InvalidEventError
from audit.events import AuditEvent, AuditReceipt
from audit.keys import log_signer
from audit.limits import AuditLimits, CapacityReport
from audit.storage import FORMAT_LINE, LogPaths
from audit.writer import LogWriter, PendingEntry
from bedrock.clock import Clock, SystemClock
from bedrock.files import fsync_dir, write_atomic

_log = logging.getLogger("audit")


@dataclass(frozen=True, slots=True)
class LogStats:
    """This process's writes: ``entries`` entries in ``batches`` writes, made durable by
    ``flushes`` fdatasync calls."""

    entries: int
    batches: int
    flushes: int


class AuditLog:
    """Append-only audit log in one directory. Use `AuditLog.open`; close it (or use it as a
    context manager) to write a final checkpoint."""

    def __init__(self, writer: LogWriter, *, host: str) -> None:
        self.host = host
        self._writer = writer
        # Plain locks, not Condition/Event: each wake-up through them costs a few µs of
        # Python under the GIL, and every append needs one (ADR 0021).
        self._mutex = threading.Lock()  # guards _pending, _closed and _writer_idle
        self._wake_writer = threading.Lock()  # held while the writer thread sleeps
        self._wake_writer.acquire()
        self._writer_idle = False
        self._pending: list[PendingEntry] = []
        self._closed = False
        self._flushes = 0
        self._pid = os.getpid()
        self._file_mutex = threading.Lock()  # the writer thread vs. on-demand checkpoints
        self._written: queue.SimpleQueue[tuple[list[PendingEntry], bool] | None] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write_loop, name="audit-writer", daemon=True),
            threading.Thread(target=self._flush_loop, name="audit-flusher", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

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
            write_atomic(paths.format, FORMAT_LINE.encode())
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
            timer = threading.Thread(target=log._checkpoint_loop, name="audit-checkpoints")
            timer.daemon = True
            timer.start()
            log._threads.append(timer)
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
        """Stop accepting events, write and flush what is pending, write a final checkpoint."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._wake_writer_locked()
        self._stop.set()
        for thread in self._threads:
            thread.join()
        try:
            if self._writer.broken is None:
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
    def capacity(self) -> CapacityReport | None:
        """The latest capacity assessment (state, headroom, log size) for a metrics gauge;
        refreshed at least every 0.25 s while entries are written."""
        return self._writer.capacity

    @property
    def broken(self) -> bool:
        """True once an fdatasync failed: the log refuses every write and checkpoint until it
        is reopened (ADR 0024)."""
        return self._writer.broken is not None

    @property
    def stats(self) -> LogStats:
        return LogStats(*self._writer.written, self._flushes)

    # -- recording ----------------------------------------------------------------------

    def record(self, event: AuditEvent) -> AuditReceipt:
        """Append ``event``; return once it is durable. Raises `AuditUnavailableError` when
        it cannot be recorded (nothing of it is acknowledged) and `InvalidEventError` for an
        event that can never be recorded."""
        entry = PendingEntry(self._encode(event), ready=_held_lock())
        self._submit([entry])
        entry.ready.acquire()  # type: ignore[union-attr]  # released by the flusher
        if entry.error is not None:
            raise entry.error
        if entry.receipt is None:  # the flusher released it with neither: never call it durable
            raise AuditUnavailableError("the audit flusher released a record without a receipt")
        return entry.receipt

    def record_batch(self, events: Sequence[AuditEvent]) -> list[AuditReceipt]:
        """Append ``events`` as consecutive entries and return their receipts once all are
        durable. If any cannot be recorded its error is raised (others may be recorded)."""
        entries = [PendingEntry(self._encode(e)) for e in events]
        if not entries:
            return []
        last = entries[-1].ready = _held_lock()
        self._submit(entries)
        last.acquire()  # entries are finalized in order: the last one done means all are
        for entry in entries:
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

    def _submit(self, entries: list[PendingEntry]) -> None:
        if os.getpid() != self._pid:
            # The writer threads and the flock stayed with the parent process.
            raise AuditConfigError(
                f"this audit log was opened by process {self._pid}; open it again in each "
                "process after fork"
            )
        with self._mutex:
            if self._closed:
                raise AuditUnavailableError("the audit log is closed")
            self._pending.extend(entries)
            self._wake_writer_locked()

    def _wake_writer_locked(self) -> None:
        # Called with _mutex held: release the sleeping writer exactly once per sleep.
        if self._writer_idle:
            self._writer_idle = False
            self._wake_writer.release()

    def _write_loop(self) -> None:
        """Writer thread: append whatever is pending as one batch, pass it to the flusher."""
        while True:
            with self._mutex:
                if not self._pending and not self._closed:
                    self._writer_idle = True
                    batch = None
                elif not self._pending:
                    break
                else:
                    batch = self._pending[: self.limits.max_batch_entries]
                    del self._pending[: len(batch)]
            if batch is None:
                self._wake_writer.acquire()  # released by _submit or close
                continue
            with self._file_mutex:
                wrote = self._write(batch)
            self._written.put((batch, wrote))
        self._written.put(None)

    def _flush_loop(self) -> None:
        """Flusher thread: one fdatasync for every batch written since the last one (a later
        flush covers earlier writes), then acknowledge those batches in order."""
        done = False
        while not done:
            item = self._written.get()
            items: list[tuple[list[PendingEntry], bool]] = []
            while item is not None:
                items.append(item)
                if self._written.empty():
                    break
                item = self._written.get()
            done = item is None
            if any(wrote for _, wrote in items) and self._writer.broken is None:
                try:
                    self._writer.sync()
                    self._flushes += 1
                except AuditUnavailableError:
                    pass  # the writer is broken now: acknowledge nothing from here on
            # Read after the flush: a failed fdatasync elsewhere (a checkpoint's) may have
            # consumed the error this flush would have seen.
            broken = self._writer.broken
            for batch, _ in items:
                for entry in batch:
                    if entry.error is None and (broken is not None or entry.receipt is None):
                        entry.receipt = None
                        entry.error = self._writer.refusal()
                    if entry.ready is not None:
                        entry.ready.release()

    def _write(self, batch: list[PendingEntry]) -> bool:
        """Append ``batch`` under the flock; True if bytes were written (need a flush)."""
        try:
            if self._writer.broken is not None:
                raise self._writer.refusal()
            with self._writer.lock():
                self._writer.catch_up(recover=False)
                wrote = self._writer.append(batch)
                self._writer.checkpoint_if_due()
            return wrote
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            error = exc
            if not isinstance(exc, AuditUnavailableError | AuditConfigError):
                error = AuditUnavailableError(f"audit entry not recorded: {exc}")
                error.__cause__ = exc
            for entry in batch:
                if entry.receipt is None and entry.error is None:
                    entry.error = error
            return any(entry.receipt is not None for entry in batch)

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Sign and write a checkpoint of the whole log now; returns the signed note.
        Refused (`AuditUnavailableError`) once a flush has failed: it would sign entries
        whose durability is unknown."""
        with self._mutex:
            if self._closed:
                raise AuditUnavailableError("the audit log is closed")
        if self._writer.broken is not None:
            raise self._writer.refusal()
        return self._checkpoint_now()

    def _checkpoint_now(self) -> str:
        with self._file_mutex, self._writer.lock():
            self._writer.catch_up(recover=False)
            return self._writer.write_checkpoint()

    def _checkpoint_loop(self) -> None:
        interval = self.limits.checkpoint_interval_s
        shared = self._writer.shared
        while not self._stop.wait(interval):
            try:
                if shared.size != shared.checkpoint_size and self._writer.broken is None:
                    self.checkpoint()
            except AuditUnavailableError:
                return  # closed, or broken by a failed flush (logged where it failed)
            except Exception:  # noqa: BLE001 - keep the timer alive; record() reports failures
                _log.exception("audit log: periodic checkpoint failed")


def _held_lock() -> threading.Lock:
    """A lock that its creator will block on until the flusher releases it: the cheapest
    one-shot wake-up CPython has (an Event is a Condition and a Lock in Python code)."""
    lock = threading.Lock()
    lock.acquire()
    return lock
