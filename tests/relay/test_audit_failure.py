"""The relay when its audit log cannot record (ADR 0024, ADR 0050), on a disk that really
fails: the audit directory lives on a FUSE mount (tests/support/faulty_fs.py) whose writes to
the entries file return EIO while the test says so.

- ``refuse`` (the default): nothing reaches IT and nothing is acknowledged on OT while the
  audit log refuses; the health endpoint and ``audit_ok`` raise the alarm; once the disk works
  again every held message is audited, then delivered, in order.
- ``forward-and-alarm``: data keeps flowing to IT, ``audit_failures_total`` counts the
  unrecorded batches and the alarm is raised; it clears when the log records again.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.relay.conftest import POLICY_PATH, Plant, Relay, envelope, start_relay, stop_relay
from tests.relay.gateways import PersistentConsumer, wait_consumer_live
from tests.support.faulty_fs import FaultyFs, FuseUnavailableError, mount_faulty_fs
from tests.support.mqtt import publish
from tests.support.net import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DEVICE = "acme/plant1/stamping/line2/cell1/gw-audit"
MESSAGES = [f"audit-fault-{n}" for n in range(5)]


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[FaultyFs]:
    try:
        with mount_faulty_fs(tmp_path / "fuse") as mounted:
            yield mounted
    except FuseUnavailableError as exc:
        pytest.skip(f"needs a FUSE mount to make the audit disk fail for real: {exc}")


def _start(plant: Plant, tmp_path: Path, fs: FaultyFs, mode: str) -> Relay:
    plant.cred(DEVICE)
    home = tmp_path / "home"
    home.mkdir()
    (fs.mountpoint / "audit").mkdir(mode=0o700)
    (home / "audit").symlink_to(fs.mountpoint / "audit")  # only the audit log on the bad disk
    text = POLICY_PATH.read_text()
    assert 'on_audit_failure = "refuse"' in text
    text = text.replace('on_audit_failure = "refuse"', f'on_audit_failure = "{mode}"')
    return start_relay(plant, home, workers=1, policy_text=text)


def _forwarded_in_batches(relay: Relay) -> int:
    return sum(
        int(e["details"]["count"])
        for e in relay.audit_events()
        if e["action"] == "relay.batch.forwarded"
    )


def _publish_all(relay: Relay) -> None:
    creds = relay.plant.cred(DEVICE)
    for msg_id in MESSAGES:
        done = publish(relay.ot, creds, f"{DEVICE}/telemetry",
                       envelope(DEVICE, msg_id, "telemetry", {"rms": 0.1}), v5=True)  # fmt: skip
        assert done.returncode == 0, done.stderr


def _alarmed(relay: Relay) -> bool:
    status, health = relay.health()
    problems = health.get("problems", [])
    assert isinstance(problems, list)
    return status == 503 and any("audit log unavailable" in p for p in problems)


def _arrived(consumer: PersistentConsumer) -> list[str]:
    return [i for i in consumer.ids() if i in MESSAGES]


@pytest.fixture
def relay_with(plant: Plant, tmp_path: Path, fs: FaultyFs) -> Iterator[Callable[[str], Relay]]:
    """Start the relay with the given ``on_audit_failure`` mode; stopped at teardown."""
    started: list[Relay] = []

    def start(mode: str) -> Relay:
        started.append(_start(plant, tmp_path, fs, mode))
        return started[-1]

    try:
        yield start
    finally:
        for relay in started:
            stop_relay(relay)


def _publish_while_failing(
    relay: Relay, fs: FaultyFs, tmp_path: Path
) -> tuple[PersistentConsumer, int]:
    """A live IT consumer; then the audit disk fails and the gateway publishes MESSAGES.
    Returns the consumer and how many messages batch records had counted before."""
    consumer = PersistentConsumer(relay, tmp_path / "it.txt", f"audit-{time.monotonic_ns()}")
    wait_consumer_live(relay, consumer, DEVICE)
    wait_for(lambda: relay.health()[0] == 200, timeout_s=30, what="relay healthy")
    audited_before = _forwarded_in_batches(relay)
    fs.fail("write", errno.EIO, name="entries.jsonl")
    _publish_all(relay)
    return consumer, audited_before


def test_refuse_holds_everything_while_the_audit_disk_fails(
    relay_with: Callable[[str], Relay], fs: FaultyFs, tmp_path: Path
) -> None:
    relay = relay_with("refuse")
    consumer, audited_before = _publish_while_failing(relay, fs, tmp_path)
    wait_for(lambda: _alarmed(relay), timeout_s=30, what="audit alarm on /health")
    assert "idmz_relay_audit_ok{" in relay.metrics()
    assert relay.snapshot_total("audit_failures") > 0
    time.sleep(3)  # several commit retries
    assert _arrived(consumer) == [], "refuse mode forwarded data it could not audit"
    assert relay.snapshot_total("inflight") >= len(MESSAGES)  # held, not acknowledged on OT

    fs.heal()
    wait_for(lambda: _arrived(consumer) == MESSAGES, timeout_s=60,
             what="every held message delivered in order once the log records")  # fmt: skip
    wait_for(lambda: relay.health()[0] == 200, timeout_s=30, what="alarm cleared")
    wait_for(lambda: relay.snapshot_total("inflight") == 0, timeout_s=30, what="OT acknowledged")
    assert _forwarded_in_batches(relay) >= audited_before + len(MESSAGES)


def test_forward_and_alarm_keeps_data_flowing_and_raises_the_alarm(
    relay_with: Callable[[str], Relay], fs: FaultyFs, tmp_path: Path
) -> None:
    relay = relay_with("forward-and-alarm")
    consumer, _ = _publish_while_failing(relay, fs, tmp_path)
    wait_for(lambda: _arrived(consumer) == MESSAGES, timeout_s=60,
             what="data delivered while the audit log fails")  # fmt: skip
    wait_for(lambda: _alarmed(relay), timeout_s=30, what="audit alarm on /health")
    assert relay.snapshot_total("audit_failures") > 0
    assert "idmz_relay_audit_failures_total" in relay.metrics()
    wait_for(lambda: relay.snapshot_total("inflight") == 0, timeout_s=30, what="OT acknowledged")

    fs.heal()
    publish(relay.ot, relay.plant.cred(DEVICE), f"{DEVICE}/status",
            envelope(DEVICE, "after-heal", "status", {}), v5=True)  # fmt: skip
    wait_for(lambda: relay.health()[0] == 200, timeout_s=30, what="alarm cleared after heal")


def test_a_failed_audit_fsync_restarts_the_worker_and_loses_nothing(
    relay_with: Callable[[str], Relay], fs: FaultyFs, tmp_path: Path
) -> None:
    """After a failed fdatasync the worker's log refuses everything until reopened (ADR 0024),
    so the worker exits and the appliance restarts it; while the disk still fails, reopening
    fails too. The OT broker keeps every unacknowledged message meanwhile."""
    relay = relay_with("refuse")
    consumer = PersistentConsumer(relay, tmp_path / "it.txt", f"audit-{time.monotonic_ns()}")
    wait_consumer_live(relay, consumer, DEVICE)
    fs.fail("fsync", errno.EIO, name="entries.jsonl")
    _publish_all(relay)
    wait_for(lambda: relay.appliance.worker_restarts >= 1, timeout_s=60,
             what="the worker restarted after the failed flush")  # fmt: skip
    time.sleep(2)
    assert _arrived(consumer) == [], "forwarded although the audit flush failed"

    fs.heal()
    wait_for(lambda: _arrived(consumer) == MESSAGES, timeout_s=90,
             what="every message delivered in order once the log could be reopened")  # fmt: skip
    wait_for(lambda: relay.health()[0] == 200, timeout_s=60, what="healthy again")
    events = relay.audit_events()  # the log on disk parses and holds the batch records
    assert any(e["action"] == "relay.batch.forwarded" for e in events)
