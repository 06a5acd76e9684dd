"""AuditLog rules: durable receipts, group commit, several processes, limits, checkpoints."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from audit.errors import AuditConfigError, AuditUnavailableError, InvalidEventError
from audit.events import AuditEvent, Outcome
from audit.keys import read_vkey
from audit.limits import AuditLimits, CapacityReport, CapacityState
from audit.log import AuditLog
from audit.merkle import leaf_hash
from audit.storage import LogPaths, read_entry, read_index
from audit.verify import verify_log
from bedrock.clock import FixedClock
from tests.audit.conftest import ORIGIN, refused
from tests.support.net import wait_for

NO_SPACE_LIMITS = dict(space_left_bytes=0, admin_space_left_bytes=0)


def test_receipt_names_the_stored_entry_and_its_leaf_hash(audit_log: AuditLog) -> None:
    receipt = audit_log.record(refused())
    paths = audit_log.paths
    data = read_entry(paths, read_index(paths), receipt.index)
    assert receipt.index == 0 and receipt.leaf_hash == leaf_hash(data)


def test_log_stamps_sequence_time_source_and_host(log_dir: Path) -> None:
    at = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    with AuditLog.open(log_dir, origin=ORIGIN, clock=FixedClock(at, "ptp"), host="idmz-1") as log:
        log.record(refused())
        log.record(refused())
    paths = LogPaths(log_dir)
    entry = json.loads(read_entry(paths, read_index(paths), 1))
    assert entry["seq"] == 1 and entry["host"] == "idmz-1" and entry["time_source"] == "ptp"
    assert entry["time"] == "2026-11-22T10:00:00.000000Z"
    assert entry["outcome"] == "denied" and entry["zone"] == "idmz"


def test_refusal_without_a_reason_is_refused_before_anything_is_written(
    audit_log: AuditLog,
) -> None:
    with pytest.raises(InvalidEventError, match="reason"):
        audit_log.record(AuditEvent("op", "operator.restart", "relay", Outcome.SUCCESS))
    assert audit_log.size == 0


def test_oversized_entry_is_refused_and_the_log_stays_contiguous(audit_log: AuditLog) -> None:
    huge = AuditEvent("d", "relay.message.refused", "t", Outcome.DENIED, "x" * 20_000)
    with pytest.raises(InvalidEventError, match="bytes"):
        audit_log.record(huge)
    assert audit_log.record(refused()).index == 0


def test_concurrent_writers_share_fsyncs_and_get_distinct_indexes(audit_log: AuditLog) -> None:
    indexes: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for i in range(40):
            r = audit_log.record(refused(i))
            with lock:
                indexes.append(r.index)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(indexes) == list(range(320))
    stats = audit_log.stats
    assert stats.entries == 320 and stats.flushes < 320  # group commit happened


def test_several_processes_append_to_one_log_without_gaps(log_dir: Path) -> None:
    AuditLog.open(log_dir, origin=ORIGIN).close()
    code = (
        "import sys; from audit.log import AuditLog; from tests.audit.conftest import ORIGIN, "
        "refused\nwith AuditLog.open(sys.argv[1], origin=ORIGIN) as log:\n"
        "    for i in range(150): log.record(refused(i))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(log_dir)], cwd=repo) for _ in range(3)
    ]
    with AuditLog.open(log_dir, origin=ORIGIN) as log:
        for i in range(150):
            log.record(refused(i))
    assert all(p.wait(timeout=120) == 0 for p in procs)
    result = verify_log(log_dir, read_vkey(log_dir / "checkpoint.vkey"))
    assert result.size == 600 and result.torn_tail_bytes == 0


def test_headroom_below_admin_space_left_refuses_to_record(log_dir: Path) -> None:
    reports: list[CapacityReport] = []
    limits = AuditLimits(space_left_bytes=2**60, admin_space_left_bytes=2**60)
    with AuditLog.open(log_dir, origin=ORIGIN, limits=limits, on_capacity=reports.append) as log:
        with pytest.raises(AuditUnavailableError, match=r"admin_space_left|headroom"):
            log.record(refused())
        assert log.size == 0
    assert [r.state for r in reports] == [CapacityState.ADMIN_SPACE_LEFT]
    assert verify_log(log_dir, read_vkey(log_dir / "checkpoint.vkey")).size == 0


def test_headroom_below_space_left_warns_and_still_records(log_dir: Path) -> None:
    reports: list[CapacityReport] = []
    limits = AuditLimits(space_left_bytes=2**60, admin_space_left_bytes=0)
    with AuditLog.open(log_dir, origin=ORIGIN, limits=limits, on_capacity=reports.append) as log:
        log.record(refused())
        log.record(refused())
    assert [r.state for r in reports] == [CapacityState.SPACE_LEFT]  # once, not per entry
    assert log.capacity is not None and log.capacity.state is CapacityState.SPACE_LEFT


def test_log_size_cap_refuses_once_reached(log_dir: Path) -> None:
    limits = AuditLimits(max_log_bytes=4000, space_left_bytes=1000, admin_space_left_bytes=500)
    with AuditLog.open(log_dir, origin=ORIGIN, limits=limits) as log:
        with pytest.raises(AuditUnavailableError):
            for i in range(100):
                log.record(refused(i))
        written = log.size
    assert 0 < written < 100
    assert verify_log(log_dir, read_vkey(log_dir / "checkpoint.vkey")).size == written


def test_checkpoint_every_n_entries(log_dir: Path) -> None:
    limits = AuditLimits(checkpoint_every_entries=5, **NO_SPACE_LIMITS)
    with AuditLog.open(log_dir, origin=ORIGIN, limits=limits) as log:
        for i in range(7):
            log.record(refused(i))
        note = (log_dir / "checkpoint").read_text()
        assert note.split("\n")[1] == "5"


def test_checkpoint_after_the_interval_without_new_entries(log_dir: Path) -> None:
    limits = AuditLimits(checkpoint_interval_s=0.1, **NO_SPACE_LIMITS)
    with AuditLog.open(log_dir, origin=ORIGIN, limits=limits) as log:
        log.record(refused())
        wait_for(
            lambda: (log_dir / "checkpoint").read_text().split("\n")[1] == "1",
            what="periodic checkpoint",
        )


def test_signing_key_is_owner_only_and_its_verifier_key_is_beside_it(log_dir: Path) -> None:
    AuditLog.open(log_dir, origin=ORIGIN).close()
    assert stat.S_IMODE((log_dir / "checkpoint-key.pem").stat().st_mode) == 0o600
    assert read_vkey(log_dir / "checkpoint.vkey").name == ORIGIN


def test_closed_log_refuses_to_record(log_dir: Path) -> None:
    log = AuditLog.open(log_dir, origin=ORIGIN)
    log.close()
    with pytest.raises(AuditUnavailableError, match="closed"):
        log.record(refused())


def test_stored_entries_are_canonical_json_of_their_own_fields(audit_log: AuditLog) -> None:
    from audit.entry import canonical_json

    event = AuditEvent(
        "ops/ünïcode", "config.relay.changed", 'max "bytes"', Outcome.SUCCESS, "tab\there",
        before={"v": 1.5}, after={"v": None}, zone="it", details={"z": True, "a": -3},
    )  # fmt: skip
    audit_log.record(event)
    paths = audit_log.paths
    data = read_entry(paths, read_index(paths), 0)
    assert canonical_json(json.loads(data)) == data and b"\n" not in data


def test_a_log_inherited_across_fork_refuses_instead_of_hanging(log_dir: Path) -> None:
    import os

    log = AuditLog.open(log_dir, origin=ORIGIN)
    try:
        pid = os.fork()
        if pid == 0:  # the child: its copy has no writer threads and shares the flock
            try:
                log.record(refused())
            except AuditConfigError:
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        log.close()


def test_reopening_a_log_under_another_origin_or_key_is_refused(log_dir: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    AuditLog.open(log_dir, origin=ORIGIN).close()
    with pytest.raises(AuditConfigError, match="refusing to switch"):
        AuditLog.open(log_dir, origin="other.example/idmz-audit")
    with pytest.raises(AuditConfigError, match="refusing to switch"):
        AuditLog.open(log_dir, origin=ORIGIN, key=Ed25519PrivateKey.generate())


def test_system_clock_is_utc_and_reports_its_sync_state() -> None:
    from bedrock.clock import SystemClock

    clock = SystemClock()
    assert clock.now().utcoffset() == timedelta(0)
    assert clock.source() in ("system", "system-ntp", "system-unsynchronized")


def test_a_clock_without_timezone_is_a_configuration_error(log_dir: Path) -> None:
    naive = FixedClock(datetime(2026, 11, 22, 10, 0))
    with AuditLog.open(log_dir, origin=ORIGIN, clock=naive) as log:
        with pytest.raises(AuditConfigError, match="UTC"):
            log.record(refused())
        assert log.size == 0
