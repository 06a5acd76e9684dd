"""The audit log on a disk that fails (ADR 0021, ADR 0024), on a real filesystem: a FUSE
passthrough mount (tests/support/faulty_fs.py) whose fdatasync or write returns EIO/ENOSPC
when the test says so.

The promise: after a failed fdatasync nothing from that flush on is acknowledged, every later
write is refused until the log is reopened, and the log still verifies with every entry that
was acknowledged before. A failed write acknowledges nothing and leaves no trace. Entries
that were written but never acknowledged may stay in the file (as after a crash); nothing
else may.
"""

from __future__ import annotations

import errno
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from audit.errors import AuditUnavailableError
from audit.events import AuditReceipt
from audit.keys import read_vkey
from audit.limits import AuditLimits
from audit.log import AuditLog
from audit.storage import RECORD_BYTES, LogPaths, read_index
from audit.verify import VerifiedLog, verify_log
from tests.audit.conftest import ORIGIN, refused
from tests.support.faulty_fs import FaultyFs, Op, mounted_or_skip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultyFs]:
    with mounted_or_skip(tmp_path) as mounted:
        yield mounted


def open_log(fs: FaultyFs, **limits: int) -> AuditLog:
    """The real log on the faulty mount; no capacity thresholds (the machine's free space is
    not under test) and no timer checkpoints (every checkpoint here is one the test asked
    for)."""
    return AuditLog.open(
        fs.mountpoint / "audit",
        origin=ORIGIN,
        limits=AuditLimits(space_left_bytes=0, admin_space_left_bytes=0, **limits),
        background_checkpoints=False,
    )


def verified(fs: FaultyFs) -> VerifiedLog:
    """Verify the files themselves, in the backing directory (not through the mount)."""
    directory = fs.backing / "audit"
    return verify_log(directory, read_vkey(directory / "checkpoint.vkey"))


def logged_ns(fs: FaultyFs) -> list[int]:
    """The ``details.n`` of every entry in the log's entries file, in order."""
    lines = LogPaths(fs.backing / "audit").entries.read_bytes().splitlines()
    return [json.loads(line)["details"]["n"] for line in lines]


def assert_acknowledged_present(fs: FaultyFs, receipts: dict[int, AuditReceipt]) -> None:
    """Each acknowledged event (``n`` -> receipt) is in the log at its index, unchanged."""
    index = read_index(LogPaths(fs.backing / "audit"))
    ns = logged_ns(fs)
    for n, receipt in receipts.items():
        i = receipt.index
        assert ns[i] == n
        assert index[i * RECORD_BYTES + 8 : (i + 1) * RECORD_BYTES] == receipt.leaf_hash


def assert_only_acknowledged_then_refused(
    fs: FaultyFs, acknowledged: Sequence[int], refused_ns: Sequence[int]
) -> None:
    """The log is the acknowledged events in order, then at most some of the refused ones
    (written, never acknowledged, as after a crash), each once; nothing else."""
    ns = logged_ns(fs)
    assert ns[: len(acknowledged)] == list(acknowledged)
    rest = ns[len(acknowledged) :]
    assert set(rest) <= set(refused_ns) and len(rest) == len(set(rest)), ns


def log_ops(fs: FaultyFs, since: int = 0) -> list[Op]:
    """Modifying operations on the log's files that reached the filesystem."""
    return [op for op in fs.ops()[since:] if op.path.startswith("/audit")]


def snapshot(fs: FaultyFs) -> dict[str, bytes]:
    paths = LogPaths(fs.backing / "audit")
    return {p.name: p.read_bytes() for p in (paths.entries, paths.index, paths.checkpoint)}


def fail_flushes(fs: FaultyFs, *, once: bool = False) -> None:
    fs.fail("fsync", errno.EIO, name="entries.jsonl", once=once)


def assert_fdatasync_failed(fs: FaultyFs, since: int) -> None:
    """The failure the test is about really happened, in the kernel's fdatasync path."""
    failed = [o for o in log_ops(fs, since) if o.op == "fdatasync" and o.result == "EIO"]
    assert failed and failed[0].path == "/audit/entries.jsonl"


# -- a failed fdatasync ---------------------------------------------------------------------


def test_entries_acknowledged_before_a_failed_fdatasync_survive_and_verify(fs: FaultyFs) -> None:
    log = open_log(fs)
    receipts = {n: log.record(refused(n)) for n in range(3)}
    log.checkpoint()
    receipts |= {n: log.record(refused(n)) for n in range(3, 5)}
    assert [r.index for r in receipts.values()] == [0, 1, 2, 3, 4]
    before = len(fs.ops())
    fail_flushes(fs)

    with pytest.raises(AuditUnavailableError, match="flush failed"):
        log.record(refused(5))
    assert_fdatasync_failed(fs, before)
    log.close()

    result = verified(fs)
    assert_acknowledged_present(fs, receipts)
    assert_only_acknowledged_then_refused(fs, range(5), [5])
    # No checkpoint was signed after the failure: not even close() signs over a log whose
    # last entries' durability is unknown.
    assert result.checkpoint.checkpoint.size == 3
    assert result.torn_tail_bytes == 0


def test_every_caller_whose_flush_failed_gets_audit_unavailable_and_no_receipt(
    fs: FaultyFs,
) -> None:
    log = open_log(fs)
    acknowledged = [log.record(refused(n)) for n in range(3)]
    flushes = log.stats.flushes
    before = len(fs.ops())
    fail_flushes(fs)

    callers = 8
    start = threading.Barrier(callers)
    outcomes: dict[int, object] = {}

    def call(n: int) -> None:
        start.wait()
        try:
            outcomes[n] = log.record(refused(n))
        except AuditUnavailableError as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=call, args=(n,)) for n in range(100, 100 + callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a caller was never answered"
    with pytest.raises(AuditUnavailableError):
        log.record_batch([refused(200), refused(201), refused(202)])

    assert len(outcomes) == callers
    assert all(isinstance(o, AuditUnavailableError) for o in outcomes.values()), outcomes
    assert_fdatasync_failed(fs, before)
    assert log.stats.flushes == flushes  # no flush succeeded after the failure
    log.close()

    verified(fs)
    assert_acknowledged_present(fs, {n: r for n, r in enumerate(acknowledged)})
    assert_only_acknowledged_then_refused(fs, range(3), [*outcomes, 200, 201, 202])


def test_after_a_failed_fdatasync_later_records_are_refused_without_touching_the_log_until_reopened(
    fs: FaultyFs,
) -> None:
    log = open_log(fs)
    receipts = {n: log.record(refused(n)) for n in range(3)}
    fail_flushes(fs)
    with pytest.raises(AuditUnavailableError):
        log.record(refused(3))
    fs.heal()  # the disk works again: the log must still not trust it until reopened
    files = snapshot(fs)
    before = len(fs.ops())

    with pytest.raises(AuditUnavailableError, match="reopen"):
        log.record(refused(4))
    with pytest.raises(AuditUnavailableError):
        log.record_batch([refused(5), refused(6)])
    log.close()

    assert log_ops(fs, before) == []  # no write, truncate, fsync or checkpoint reached the disk
    assert snapshot(fs) == files

    reopened = open_log(fs)
    size = reopened.size
    after_reopen = verified(fs)
    assert after_reopen.size == size
    assert_acknowledged_present(fs, receipts)
    assert_only_acknowledged_then_refused(fs, range(3), [3])
    receipt = reopened.record(refused(7))
    assert receipt.index == size
    reopened.close()

    result = verified(fs)
    assert result.size == size + 1 and result.checkpoint.checkpoint.size == size + 1
    assert logged_ns(fs)[-1] == 7
    assert_acknowledged_present(fs, {**receipts, 7: receipt})


def test_a_checkpoint_after_a_failed_fdatasync_is_refused_until_reopened(fs: FaultyFs) -> None:
    """A checkpoint signs entry 3, whose caller was told it was not recorded and whose bytes
    a failed fdatasync may have lost: the next fsync succeeding proves nothing (fsyncgate)."""
    log = open_log(fs)
    for n in range(3):
        log.record(refused(n))
    fail_flushes(fs)
    with pytest.raises(AuditUnavailableError):
        log.record(refused(3))
    fs.heal()
    files = snapshot(fs)
    before = len(fs.ops())

    try:
        with pytest.raises(AuditUnavailableError):
            log.checkpoint()
    finally:
        log.close()
    assert log_ops(fs, before) == []
    assert snapshot(fs) == files


def test_a_failed_fdatasync_in_an_automatic_checkpoint_stops_the_log(fs: FaultyFs) -> None:
    """The writer signs a checkpoint every ``checkpoint_every_entries``; that checkpoint's
    fdatasync covers the batch just written. When it fails, Linux reports the error once: the
    commit thread's fdatasync right after succeeds, and must not be taken as durability."""
    log = open_log(fs, checkpoint_every_entries=3)
    receipts = {n: log.record(refused(n)) for n in range(2)}
    before = len(fs.ops())
    fail_flushes(fs, once=True)

    try:
        with pytest.raises(AuditUnavailableError):
            log.record(refused(2))  # entry 2 completes the 3 entries: checkpoint due
        assert_fdatasync_failed(fs, before)
        with pytest.raises(AuditUnavailableError):
            log.record(refused(3))
    finally:
        log.close()
    verified(fs)
    assert_acknowledged_present(fs, receipts)
    assert_only_acknowledged_then_refused(fs, range(2), [2, 3])


def test_a_failed_fdatasync_in_an_explicit_checkpoint_stops_the_log(fs: FaultyFs) -> None:
    log = open_log(fs)
    receipts = {n: log.record(refused(n)) for n in range(3)}
    before = len(fs.ops())
    fail_flushes(fs, once=True)

    try:
        with pytest.raises(AuditUnavailableError):
            log.checkpoint()
        assert_fdatasync_failed(fs, before)
        with pytest.raises(AuditUnavailableError):
            log.record(refused(3))  # the disk answers again; the log must not believe it
    finally:
        log.close()
    result = verified(fs)
    assert result.checkpoint.checkpoint.size == 0  # the one signed when the log was created
    assert_acknowledged_present(fs, receipts)
    assert_only_acknowledged_then_refused(fs, range(3), [3])


# -- a failed write -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "name", "short"),
    [
        (errno.EIO, "entries.jsonl", False),
        (errno.ENOSPC, "entries.jsonl", True),  # half the line stored, then the disk is full
        (errno.EIO, "entries.idx", False),  # the entry line is written, its index record not
        (errno.ENOSPC, "entries.idx", False),
    ],
    ids=["eio-entries", "enospc-short-entries", "eio-index", "enospc-index"],
)
def test_a_write_error_is_refused_with_nothing_acknowledged_and_no_trace_left(
    fs: FaultyFs, error: int, name: str, short: bool
) -> None:
    log = open_log(fs)
    receipts = {n: log.record(refused(n)) for n in range(3)}
    log.checkpoint()
    files = snapshot(fs)
    flushes = log.stats.flushes
    before = len(fs.ops())
    fs.fail("write", error, name=name, short=short)

    with pytest.raises(AuditUnavailableError, match="not recorded") as refusal:
        log.record(refused(3))
    cause = refusal.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == error
    writes = [o for o in log_ops(fs, before) if o.op == "write"]
    assert writes[-1].path == f"/audit/{name}" and writes[-1].result == errno.errorcode[error]
    assert snapshot(fs) == files  # the partial batch was cut from both files again
    assert log.stats.flushes == flushes  # nothing to flush, nothing acknowledged
    assert verified(fs).size == 3

    # A write error (unlike a failed fdatasync) leaves no doubt about the page cache: once
    # the disk takes writes again the log goes on, with no gap where the refusal was.
    fs.heal()
    receipt = log.record(refused(4))
    assert receipt.index == 3
    log.close()
    result = verified(fs)
    assert result.size == 4 and result.checkpoint.checkpoint.size == 4
    assert logged_ns(fs) == [0, 1, 2, 4]
    assert_acknowledged_present(fs, {**receipts, 4: receipt})
