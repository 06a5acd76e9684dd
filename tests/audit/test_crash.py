"""kill -9 in the middle of a burst: no acknowledged entry is lost, the log still verifies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from audit.keys import read_vkey
from audit.log import AuditLog
from audit.storage import LogPaths, read_entry, read_index
from audit.verify import verify_log
from tests.audit.conftest import ORIGIN, fill, refused

WRITER = [sys.executable, "-m", "tests.audit.crash_writer"]
REPO = Path(__file__).resolve().parents[2]


def _burst_then_kill(log_dir: Path, writer: str, min_acks: int) -> dict[int, str]:
    proc = subprocess.Popen(
        [*WRITER, str(log_dir), writer], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    acked: dict[int, str] = {}
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        for line in proc.stdout:
            _, index, resource = line.split()
            acked[int(index)] = resource
            if len(acked) >= min_acks:
                os.kill(proc.pid, signal.SIGKILL)  # mid-burst: other threads are writing
                break
        # Acks already in the pipe were acknowledged before the kill too.
        for line in proc.stdout:
            parts = line.split()
            if len(parts) == 3:
                acked[int(parts[1])] = parts[2]
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return acked


def _assert_all_acked_present(log_dir: Path, acked: dict[int, str]) -> None:
    paths = LogPaths(log_dir)
    index = read_index(paths)
    for i, resource in acked.items():
        entry = json.loads(read_entry(paths, index, i))
        assert entry["seq"] == i
        assert entry["resource"] == resource, f"acknowledged entry {i} was lost or replaced"


def test_sigkill_mid_burst_loses_no_acknowledged_entry_and_log_verifies(log_dir: Path) -> None:
    fill(log_dir, 1)
    key = read_vkey(log_dir / "checkpoint.vkey")
    all_acked: dict[int, str] = {}
    for round_ in range(3):
        acked = _burst_then_kill(log_dir, f"w{round_}", min_acks=150)
        all_acked.update(acked)
        # Verify straight after the crash (no reopen): must pass, acks must be there.
        result = verify_log(log_dir, key)
        assert result.size >= max(acked) + 1
        _assert_all_acked_present(log_dir, all_acked)
    # Reopening recovers: the torn tail is dropped, a checkpoint covers every entry.
    with AuditLog.open(log_dir, origin=ORIGIN) as log:
        receipt = log.record(refused())
    result = verify_log(log_dir, key)
    assert result.unsigned_entries == 0 and result.torn_tail_bytes == 0
    assert result.size == receipt.index + 1
    _assert_all_acked_present(log_dir, all_acked)


def test_index_records_lost_in_a_power_cut_are_rebuilt_from_durable_entries(
    log_dir: Path,
) -> None:
    fill(log_dir, 20)
    log = AuditLog.open(log_dir, origin=ORIGIN, background_checkpoints=False)
    acked = [log.record(refused(i)).index for i in range(5)]
    log._writer.close()  # the process dies: no close(), no final checkpoint
    paths = LogPaths(log_dir)
    index = paths.index.read_bytes()
    # Power cut: the last index page never reached the disk, one record came back zeroed.
    paths.index.write_bytes(index[: 21 * 40] + b"\x00" * 40)
    with AuditLog.open(log_dir, origin=ORIGIN) as reopened:
        assert reopened.size == 25
    result = verify_log(log_dir, read_vkey(log_dir / "checkpoint.vkey"))
    assert result.size == 25 and result.unsigned_entries == 0
    assert acked == list(range(20, 25))
