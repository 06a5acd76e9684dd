"""Appending batches to the files of one log under the cross-process lock (ADR 0020-0022).

`LogWriter` owns the file descriptors and what this process knows of the log on disk (size,
end offset, the RFC 6962 compact range). Callers hold ``writer.lock()`` around
``catch_up`` + ``append`` (+ ``checkpoint_if_due``) and call ``sync`` before acknowledging;
`audit.log.AuditLog` does that with group commit.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.entry import EncodedEvent, encode_stamp
from audit.errors import (
    AuditConfigError,
    AuditUnavailableError,
    InvalidEventError,
    LogCorruptedError,
)
from audit.events import AuditReceipt
from audit.limits import AuditLimits, CapacityReport, CapacityState, assess_capacity
from audit.merkle import TreeBuilder, leaf_hash
from audit.note import NoteSigner
from audit.recovery import first_bad_record, index_tail
from audit.storage import (
    RECORD_BYTES,
    FileLock,
    LeafHashes,
    LogPaths,
    pack_record,
    pwrite_all,
    record_end,
)
from bedrock.clock import Clock
from bedrock.files import write_atomic

_log = logging.getLogger("audit")


@dataclass(eq=False, slots=True)
class PendingEntry:
    """One event on its way into the log, and its outcome once known."""

    encoded: EncodedEvent
    receipt: AuditReceipt | None = None
    error: BaseException | None = None
    # Held while its caller waits, released when the outcome is final. Entries are finalized
    # in order, so a bulk submission gives a lock only to its last entry.
    ready: threading.Lock | None = None


@dataclass
class SharedState:
    """What this process knows of the log on disk (read under the flock)."""

    size: int = 0
    end_offset: int = 0
    tree: TreeBuilder = field(default_factory=TreeBuilder)
    checkpoint_size: int = -1
    checkpoint_mtime_ns: int = 0


class LogWriter:
    def __init__(
        self,
        paths: LogPaths,
        signer: NoteSigner,
        *,
        clock: Clock,
        limits: AuditLimits,
        on_capacity: Callable[[CapacityReport], None] | None,
    ) -> None:
        self.paths = paths
        self.signer = signer
        self.clock = clock
        self.limits = limits
        self._on_capacity = on_capacity
        self.shared = SharedState()
        self.written = (0, 0)  # (entries, batches) appended by this process
        self._capacity_state = CapacityState.OK
        self.capacity: CapacityReport | None = None  # the latest assessment, for metrics
        self._capacity_at = -1e9  # monotonic time of the last statvfs
        self._capacity_spent = 0  # bytes written since
        self._capacity_slack = 0  # bytes that may be written before checking again
        # The first failed fdatasync, after which nothing is acknowledged or signed: Linux
        # reports a writeback error to one fsync caller only, so a later fsync that succeeds
        # proves nothing about the pages the failed one covered ("fsyncgate").
        self.broken: OSError | None = None
        self._sync_lock = threading.Lock()
        self._lock_fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        self._entries_fd = os.open(paths.entries, os.O_RDWR | os.O_CREAT, 0o640)
        self._index_fd = os.open(paths.index, os.O_RDWR | os.O_CREAT, 0o640)

    def close(self) -> None:
        for fd in (self._entries_fd, self._index_fd, self._lock_fd):
            os.close(fd)

    def lock(self) -> FileLock:
        return FileLock(self._lock_fd)

    def sync(self) -> None:
        """Make every entry appended so far durable (fdatasync of the entries file)."""
        self._datasync(self._entries_fd)

    def _datasync(self, fd: int) -> None:
        """fdatasync, unless a flush failed before; the first failure breaks the writer.
        Every fdatasync of the log goes through here, under one lock, so no flush can slip
        between a failure and the moment it is recorded."""
        with self._sync_lock:
            if self.broken is not None:
                raise self.refusal()
            try:
                os.fdatasync(fd)
            except OSError as exc:
                self.broken = exc
                _log.error("audit log: fdatasync failed, refusing further writes: %s", exc)
                raise self.refusal() from exc

    def refusal(self) -> AuditUnavailableError:
        """The error for anything asked of a broken writer."""
        error = AuditUnavailableError(
            f"audit log flush failed ({self.broken}): nothing from that flush on is recorded "
            "or signed; reopen the log after checking the disk"
        )
        error.__cause__ = self.broken
        return error

    def append(self, batch: list[PendingEntry]) -> bool:
        """Write ``batch`` after the last entry (call under the lock, after ``catch_up``);
        stamps each entry and sets its receipt. True if anything was written; ``sync`` must
        succeed before any receipt is handed out."""
        shared = self.shared
        now = self.clock.now()
        stamp = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
        if now.utcoffset() is None or now.utcoffset():
            raise AuditConfigError("the audit clock must return aware UTC datetimes")
        stamp_json = encode_stamp(stamp, self.clock.source())
        lines: list[bytes] = []
        records: list[bytes] = []
        accepted: list[tuple[PendingEntry, int, bytes]] = []
        end = shared.end_offset
        seq = shared.size
        for slot in batch:
            data = slot.encoded.entry(seq, stamp_json)
            if len(data) + 1 > self.limits.max_entry_bytes:
                slot.error = InvalidEventError(
                    f"entry would be {len(data) + 1} bytes (max {self.limits.max_entry_bytes})"
                )
                continue
            h = leaf_hash(data)
            end += len(data) + 1
            lines.append(data + b"\n")
            records.append(pack_record(end, h))
            accepted.append((slot, seq, h))
            seq += 1
        if not accepted:
            return False
        blob = b"".join(lines)
        self._check_capacity(len(blob) + RECORD_BYTES * len(records))
        try:
            pwrite_all(self._entries_fd, blob, shared.end_offset)
            # Not fsynced here: the entries are the durable record; the index is made
            # durable with each checkpoint and repaired from the entries after a crash.
            pwrite_all(self._index_fd, b"".join(records), shared.size * RECORD_BYTES)
        except OSError as exc:
            # Nothing was acknowledged yet: take the batch back out of both files.
            with contextlib.suppress(OSError):
                os.ftruncate(self._entries_fd, shared.end_offset)
                os.ftruncate(self._index_fd, shared.size * RECORD_BYTES)
            raise AuditUnavailableError(
                f"audit entries {shared.size}..{seq - 1} not recorded: {exc}"
            ) from exc
        for slot, index, h in accepted:
            shared.tree.append(h)
            slot.receipt = AuditReceipt(index=index, leaf_hash=h)
        shared.size = seq
        shared.end_offset = end
        self.written = (self.written[0] + len(accepted), self.written[1] + 1)
        return True

    def _check_capacity(self, batch_bytes: int) -> None:
        # statvfs at most every 0.25 s while far from the thresholds; every batch near them.
        mono = time.monotonic()
        self._capacity_spent += batch_bytes
        if mono - self._capacity_at < 0.25 and self._capacity_spent < self._capacity_slack:
            return
        log_bytes = self.shared.end_offset + self.shared.size * RECORD_BYTES
        report = assess_capacity(self.limits, self.paths.directory, log_bytes, batch_bytes)
        self.capacity = report
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
                f"audit log refuses to record entry {self.shared.size}: {report.message}"
            )

    def catch_up(self, *, recover: bool) -> None:
        """Learn what other processes appended, from the index (call under the flock). With
        ``recover`` (on open), also repair the index after a crash (audit.recovery)."""
        shared = self.shared
        if recover:
            self.read_checkpoint_size()
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

    def read_checkpoint_size(self) -> None:
        shared = self.shared
        try:
            mtime = os.stat(self.paths.checkpoint).st_mtime_ns
        except FileNotFoundError:
            shared.checkpoint_size, shared.checkpoint_mtime_ns = -1, 0
            return
        if mtime != shared.checkpoint_mtime_ns:
            lines = self.paths.checkpoint.read_text().split("\n")
            shared.checkpoint_size = int(lines[1]) if len(lines) > 2 else -1
            shared.checkpoint_mtime_ns = mtime

    def _refuse_to_shrink(self, size: int, root: bytes) -> None:
        """Never sign over a log that lost signed entries: a checkpoint of a shorter tree (or
        of the same size with another root) would launder truncation or rewriting."""
        try:
            lines = self.paths.checkpoint.read_text().split("\n")
            old_size, old_root = int(lines[1]), base64.b64decode(lines[2], validate=True)
        except FileNotFoundError:
            return
        except (IndexError, ValueError) as exc:
            raise LogCorruptedError(
                f"the stored checkpoint {self.paths.checkpoint} is malformed"
            ) from exc
        if size < old_size:
            raise LogCorruptedError(
                f"the log holds {size} entries but its last checkpoint signed {old_size}; "
                f"entries {size}..{old_size - 1} are missing; refusing to sign a shorter log",
                index=size,
            )
        if size == old_size and root != old_root:
            raise LogCorruptedError(
                f"the log's {size} entries no longer hash to the signed checkpoint's root; "
                "refusing to sign over a rewritten log"
            )

    @property
    def checkpoint_due(self) -> bool:
        """Whether ``checkpoint_every_entries`` entries are unsigned, as far as this process
        knows (no system call; another process may have signed them since)."""
        shared = self.shared
        unsigned = shared.size - max(shared.checkpoint_size, 0)
        return (
            shared.size != shared.checkpoint_size
            and unsigned >= self.limits.checkpoint_every_entries
        )

    def checkpoint_if_due(self) -> None:
        if self.checkpoint_due:
            self.read_checkpoint_size()  # another process may have written one
            if self.checkpoint_due:
                self.write_checkpoint()

    def write_checkpoint(self) -> str:
        shared = self.shared
        root = shared.tree.root()
        self._refuse_to_shrink(shared.size, root)
        # Only durable entries are signed, and the index up to a checkpoint never needs repair.
        self._datasync(self._entries_fd)
        self._datasync(self._index_fd)
        note = sign_checkpoint(Checkpoint(self.signer.name, shared.size, root), self.signer)
        write_atomic(self.paths.checkpoint, note.encode())
        self.read_checkpoint_size()
        return note
