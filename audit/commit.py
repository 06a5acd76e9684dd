"""Group commit with one commit thread whose wake-ups overlap the next batch's I/O (ADR 0127).

The commit thread writes a batch (under the cross-process flock), ``fdatasync``s it, and then,
before waking that batch's callers, writes the batch that gathered meanwhile: its ``pwrite``
calls run while no caller competes for the GIL, and the callers are woken just before the
next ``fdatasync``, so they run (return, encode their next event, queue it) while the disk
flushes. A durable batch's callers are never held behind anything that can block for long:
they are woken before the thread waits for another process's flock, for an on-demand
checkpoint of this process, or writes a checkpoint, and before it sleeps for lack of work.
Batches are acknowledged in order, and none after a failed flush (ADR 0021, ADR 0024).
"""

from __future__ import annotations

import logging
import threading

from audit.errors import AuditConfigError, AuditUnavailableError
from audit.writer import LogWriter, PendingEntry

_log = logging.getLogger("audit")


class GroupCommit:
    """The queue of pending entries and the thread that makes them durable."""

    def __init__(self, writer: LogWriter, max_batch_entries: int) -> None:
        self._writer = writer
        self._max_batch = max_batch_entries
        # Plain locks, not Condition/Event: each wake-up through them costs a few µs of
        # Python under the GIL, and every append needs one (ADR 0021).
        self._mutex = threading.Lock()  # guards _pending, _closed and _idle
        self._wake = threading.Lock()  # held while the commit thread sleeps
        self._wake.acquire()
        self._idle = False
        self._pending: list[PendingEntry] = []
        self._closed = False
        self.flushes = 0
        self.file_mutex = threading.Lock()  # the commit thread vs. on-demand checkpoints
        self._in_flight: list[PendingEntry] = []  # the batch being written and flushed
        self._thread = threading.Thread(target=self._run, name="audit-commit", daemon=True)
        self._thread.start()

    def submit(self, entries: list[PendingEntry]) -> None:
        with self._mutex:
            if self._closed:
                raise AuditUnavailableError("the audit log is closed")
            self._pending.extend(entries)
            if self._idle:  # release the sleeping thread exactly once per sleep
                self._idle = False
                self._wake.release()

    def close(self) -> bool:
        """Stop accepting entries, commit what is pending, end the thread. False if it was
        closed already."""
        with self._mutex:
            if self._closed:
                return False
            self._closed = True
            if self._idle:
                self._idle = False
                self._wake.release()
        self._thread.join()
        return True

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Entries submitted and not yet taken into a batch."""
        return len(self._pending)

    def _take(self, *, wait: bool) -> list[PendingEntry] | None:
        """The next batch; [] if none is pending and not ``wait``; None once closed and
        drained."""
        while True:
            with self._mutex:
                if self._pending:
                    batch = self._pending[: self._max_batch]
                    del self._pending[: len(batch)]
                    return batch
                if self._closed:
                    return None
                if not wait:
                    return []
                self._idle = True
            self._wake.acquire()  # released by submit or close

    def _run(self) -> None:
        durable: list[PendingEntry] = []  # final outcomes whose callers are not woken yet
        try:
            self._commit_loop(durable)
        except BaseException as exc:  # noqa: BLE001 - no caller may wait forever
            _log.exception("audit log: the commit thread failed; the log refuses from now on")
            self._fail_everything(durable, exc)

    def _fail_everything(self, durable: list[PendingEntry], exc: BaseException) -> None:
        """The commit thread is ending on an unexpected error: answer every caller (a durable
        batch keeps its receipts; anything not flushed is refused) and refuse new entries."""
        with self._mutex:
            self._closed = True
            pending, self._pending = self._pending, []
        refusal = AuditUnavailableError(
            f"audit entry not recorded: the commit thread failed: {exc}"
        )
        refusal.__cause__ = exc
        for entry in self._in_flight + pending:
            entry.receipt = None
            entry.error = refusal
        _wake(durable)
        _wake(self._in_flight)
        _wake(pending)

    def _commit_loop(self, durable: list[PendingEntry]) -> None:
        batch = self._take(wait=True)
        while batch is not None:
            self._in_flight = batch
            wrote = self._write(batch, durable)  # wakes ``durable`` and empties it
            if wrote and self._writer.broken is None:
                try:
                    self._writer.sync()
                    self.flushes += 1
                except AuditUnavailableError:
                    pass  # the writer is broken now: acknowledge nothing from here on
            # Read after the flush: a failed fdatasync elsewhere (a checkpoint's) may have
            # consumed the error this flush would have seen.
            broken = self._writer.broken
            for entry in batch:
                if entry.error is None and (broken is not None or entry.receipt is None):
                    entry.receipt = None
                    entry.error = self._writer.refusal()
            durable[:] = batch
            self._in_flight = []
            batch = self._take(wait=False)
            if not batch:
                _wake(durable)  # nothing to overlap with: answer before sleeping
                batch = self._take(wait=True)
        _wake(durable)

    def _write(self, batch: list[PendingEntry], durable: list[PendingEntry]) -> bool:
        """Append ``batch`` under the flock; True if bytes were written (they need a flush).
        Wakes the callers of ``durable`` once the batch's system calls are issued (the flock
        released: a woken caller would take the GIL that the unlock gives up), or before
        anything that may wait on another thread or process."""
        writer = self._writer
        try:
            if writer.broken is not None:
                raise writer.refusal()
            if not self.file_mutex.acquire(blocking=False):
                _wake(durable)  # an on-demand checkpoint is being written
                self.file_mutex.acquire()
            try:
                flock = writer.lock()
                if not flock.acquire(blocking=False):
                    _wake(durable)  # another process is appending
                    flock.acquire()
                try:
                    writer.catch_up(recover=False)
                    wrote = writer.append(batch)
                    if writer.checkpoint_due:
                        _wake(durable)  # a checkpoint flushes and signs: answer first
                        writer.checkpoint_if_due()
                finally:
                    flock.release()
            finally:
                self.file_mutex.release()
            return wrote
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            error = exc
            if not isinstance(exc, AuditUnavailableError | AuditConfigError):
                error = AuditUnavailableError(f"audit entry not recorded: {exc}")
                error.__cause__ = exc
            unanswered = [e for e in batch if e.receipt is None and e.error is None]
            for entry in unanswered:
                entry.error = error
            if not unanswered:  # written, then the checkpoint failed: no caller hears of it
                _log.error("audit log: checkpoint after a batch failed: %s", exc)
            return any(entry.receipt is not None for entry in batch)
        finally:
            _wake(durable)


def _wake(entries: list[PendingEntry]) -> None:
    """Wake the callers of ``entries`` (whose outcomes are final), in order, once."""
    for entry in entries:
        if entry.ready is not None:
            entry.ready.release()
    entries.clear()
