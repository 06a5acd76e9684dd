"""The commit thread's pipeline (ADR 0127) on a real disk that flushes when the test says so
(a FUSE mount whose fdatasync stalls, tests/support/faulty_fs.py), with real threads and a
real second process.

The commit thread wakes a durable batch's callers only after it has issued the next batch's
writes. What that must never cost: a durable caller kept waiting behind another process's
flock or behind a checkpoint, or a caller told "durable" for a batch whose flush failed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.errors import AuditUnavailableError
from audit.events import AuditReceipt
from audit.log import AuditLog
from tests.audit.conftest import refused
from tests.audit.test_fsync_failure import (
    assert_acknowledged_present,
    assert_only_acknowledged_then_refused,
    fail_flushes,
    log_ops,
    open_log,
    verified,
)
from tests.support.faulty_fs import FaultyFs, mounted_or_skip
from tests.support.net import wait_for

pytestmark = pytest.mark.timeout(120)

ANSWER_S = 10.0  # far beyond a wake-up; a caller held hostage never returns in time


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultyFs]:
    with mounted_or_skip(tmp_path) as mounted:
        yield mounted


class Caller(threading.Thread):
    """One thread calling ``log.record(refused(n))``; ``outcome`` is its receipt or error."""

    def __init__(self, log: AuditLog, n: int) -> None:
        super().__init__(name=f"caller-{n}", daemon=True)
        self.log, self.n = log, n
        self.outcome: AuditReceipt | AuditUnavailableError | None = None
        self.start()

    def run(self) -> None:
        try:
            self.outcome = self.log.record(refused(self.n))
        except AuditUnavailableError as exc:
            self.outcome = exc

    def answered(self, timeout: float = ANSWER_S) -> AuditReceipt | AuditUnavailableError:
        self.join(timeout)
        assert not self.is_alive(), f"caller {self.n} was not answered within {timeout} s"
        assert self.outcome is not None
        return self.outcome


def wait_stalled(fs: FaultyFs, count: int, name: str = "entries.jsonl") -> None:
    wait_for(
        lambda: sum(o.op == "stalled" and o.path.endswith(name) for o in log_ops(fs)) >= count,
        timeout_s=ANSWER_S,
        what=f"fsync number {count} of {name} to stall",
    )


def wait_queued(log: AuditLog, count: int) -> None:
    """Until ``count`` entries wait for the commit thread to take them as its next batch (the
    test needs them there before the stalled flush ends)."""
    wait_for(lambda: log.waiting >= count, timeout_s=ANSWER_S, what="a queued entry")


class FlockHolder:
    """Another process that holds the log's flock from `lock` until `unlock`."""

    SCRIPT = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline(); fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
    )

    def __init__(self, lock_path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(lock_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._say(None) == "open"

    def _say(self, line: str | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def lock(self) -> None:
        assert self._say("lock") == "locked"

    def unlock(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("unlock\n")
        self.proc.stdin.flush()
        assert self.proc.wait(timeout=ANSWER_S) == 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_durable_callers_answer_does_not_wait_for_another_process_holding_the_flock(
    fs: FaultyFs,
) -> None:
    log = open_log(fs)
    log.record(refused(0))
    holder = FlockHolder(log.paths.lock)
    try:
        fs.stall(name="entries.jsonl")
        first = Caller(log, 1)
        wait_stalled(fs, 1)  # entry 1 is written; its fdatasync is held
        holder.lock()  # the next batch cannot be written until the other process lets go
        second = Caller(log, 2)
        wait_queued(log, 1)
        fs.unstall()

        receipt = first.answered()  # while the other process still holds the flock
        assert isinstance(receipt, AuditReceipt) and receipt.index == 1
        assert second.is_alive()  # its entry cannot even be written yet
        holder.unlock()
        later = second.answered()
        assert isinstance(later, AuditReceipt) and later.index == 2
    finally:
        holder.kill()
        fs.unstall()
        log.close()
    assert verified(fs).size == 3


def test_a_durable_callers_answer_does_not_wait_for_the_checkpoint_the_next_batch_triggers(
    fs: FaultyFs,
) -> None:
    log = open_log(fs, checkpoint_every_entries=4)  # entry 3 completes four: checkpoint due
    for n in range(2):
        log.record(refused(n))
    fs.stall(name="entries.jsonl")
    fs.stall(name="entries.idx")  # the checkpoint's flush of the index
    try:
        first = Caller(log, 2)
        wait_stalled(fs, 1)
        second = Caller(log, 3)
        wait_queued(log, 1)
        fs.unstall(name="entries.jsonl")
        wait_stalled(fs, 1, name="entries.idx")  # the checkpoint is being written

        receipt = first.answered()
        assert isinstance(receipt, AuditReceipt) and receipt.index == 2
        assert second.is_alive()  # its batch is durable only once the checkpoint is
        fs.unstall()
        later = second.answered()
        assert isinstance(later, AuditReceipt) and later.index == 3
    finally:
        fs.unstall()
        log.close()
    assert verified(fs).checkpoint.checkpoint.size == 4


def test_a_failed_flush_of_the_next_batch_refuses_it_and_keeps_the_durable_batchs_receipts(
    fs: FaultyFs,
) -> None:
    log = open_log(fs)
    receipts = {n: log.record(refused(n)) for n in range(3)}
    fs.stall(name="entries.jsonl")
    try:
        first = Caller(log, 3)
        wait_stalled(fs, 1)  # batch N: entry 3, past its fault check, flush held
        second = Caller(log, 4)
        wait_queued(log, 1)  # batch N+1: entry 4, written while N's callers are woken
        fail_flushes(fs)  # every fdatasync from here on fails: N+1's does
        fs.unstall()

        receipt = first.answered()
        assert isinstance(receipt, AuditReceipt) and receipt.index == 3
        assert isinstance(second.answered(), AuditUnavailableError)
        assert log.broken
        with pytest.raises(AuditUnavailableError):
            log.record(refused(5))
    finally:
        fs.unstall()
        log.close()
    verified(fs)
    assert_acknowledged_present(fs, {**receipts, 3: receipt})
    assert_only_acknowledged_then_refused(fs, range(4), [4])


def test_a_bug_in_the_commit_thread_answers_every_caller_and_refuses_after(
    audit_log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception nobody planned for (here a programming error raised by the flush) must not
    leave a caller blocked in ``record`` forever: everything not flushed is refused, and the
    log refuses from then on instead of accepting entries nobody will write."""
    first = audit_log.record(refused(0))
    writer = audit_log._writer

    def broken_sync() -> None:
        raise RuntimeError("a bug, not an I/O error")

    monkeypatch.setattr(writer, "sync", broken_sync)
    callers = [Caller(audit_log, n) for n in range(1, 9)]
    outcomes = [caller.answered() for caller in callers]
    assert all(isinstance(outcome, AuditUnavailableError) for outcome in outcomes)
    assert "commit thread failed" in str(outcomes[0])
    with pytest.raises(AuditUnavailableError):
        audit_log.record(refused(99))
    assert isinstance(first, AuditReceipt)  # flushed before the bug: it keeps its receipt
