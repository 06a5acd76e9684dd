"""`AuditLog`: the durable, tamper-evident `AuditSink`.

    >>> with AuditLog.open(home / "audit", origin="plant1.example/idmz-audit") as log:
    ...     receipt = log.record(AuditEvent("op", "operator.note", "-", Outcome.SUCCESS, "why"))

``record`` returns only after the entry is written and fsynced. Concurrent callers share
fsyncs (group commit, ADR 0021, ADR 0127): one commit thread (`audit.commit`) appends every
pending entry under the cross-process ``flock`` (ADR 0022), ``fdatasync``s the batch, and
wakes exactly its callers (each sleeps on its own plain lock) once the next batch's writes
are issued; batches are acknowledged in order, and none after a failed flush. The log stamps
``seq`` (the Merkle leaf index), ``time``, ``time_source`` and ``host``. Open the log after
forking worker processes, not before (threads do not survive ``fork``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.commit import GroupCommit
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
        self._pid = os.getpid()
        self._commit = GroupCommit(writer, writer.limits.max_batch_entries)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

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
        if not self._commit.close():
            return
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
    def waiting(self) -> int:
        """Entries submitted and not yet taken by the commit thread as its next batch (how far
        the callers are ahead of the disk)."""
        return self._commit.queued

    @property
    def stats(self) -> LogStats:
        return LogStats(*self._writer.written, self._commit.flushes)

    # -- recording ----------------------------------------------------------------------

    def record(self, event: AuditEvent) -> AuditReceipt:
        """Append ``event``; return once it is durable. Raises `AuditUnavailableError` when
        it cannot be recorded (nothing of it is acknowledged) and `InvalidEventError` for an
        event that can never be recorded."""
        entry = PendingEntry(self._encode(event), ready=_held_lock())
        self._submit([entry])
        entry.ready.acquire()  # type: ignore[union-attr]  # released by the commit thread
        if entry.error is not None:
            raise entry.error
        if entry.receipt is None:  # released with neither: never call it durable
            raise AuditUnavailableError("the audit commit released a record without a receipt")
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
            # The commit thread and the flock stayed with the parent process.
            raise AuditConfigError(
                f"this audit log was opened by process {self._pid}; open it again in each "
                "process after fork"
            )
        self._commit.submit(entries)

    # -- checkpoints --------------------------------------------------------------------

    def checkpoint(self) -> str:
        """Sign and write a checkpoint of the whole log now; returns the signed note.
        Refused (`AuditUnavailableError`) once a flush has failed: it would sign entries
        whose durability is unknown."""
        if self._commit.closed:
            raise AuditUnavailableError("the audit log is closed")
        if self._writer.broken is not None:
            raise self._writer.refusal()
        return self._checkpoint_now()

    def _checkpoint_now(self) -> str:
        with self._commit.file_mutex, self._writer.lock():
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
    """A lock that its creator will block on until the commit thread releases it: the cheapest
    one-shot wake-up CPython has (an Event is a Condition and a Lock in Python code)."""
    lock = threading.Lock()
    lock.acquire()
    return lock
