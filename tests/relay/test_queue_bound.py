"""The OT broker's queue for the relay is bounded (review H2: it was unbounded) and an overflow
is explicit: an audit record, a metric and a health alarm (ADR 0058). Real Mosquitto, the relay's
worker frozen (SIGSTOP) so that the broker has to queue, and then to drop."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from relay.config import RelayLimits
from tests.relay.conftest import PRESS_1, Plant, envelope, start_relay, stop_relay
from tests.relay.test_revocation import _state, _worker_pids
from tests.support.mqtt import publish_lines
from tests.support.net import wait_for

pytestmark = pytest.mark.integration
INFLIGHT, QUEUED, SENT = 4, 6, 40


def test_a_full_ot_queue_is_audited_counted_and_alarmed(
    plant: Plant, tmp_path_factory: pytest.TempPathFactory
) -> None:
    relay = start_relay(plant, tmp_path_factory.mktemp("relay-queue"), workers=1,
                        limits=RelayLimits(max_inflight=INFLIGHT), max_queued_messages=QUEUED)  # fmt: skip
    try:
        assert f"max_queued_messages {QUEUED}" in (relay.home / "brokers" / "ot.conf").read_text()
        pids = _worker_pids(relay)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            wait_for(lambda pid=pid: _state(pid) == "T", timeout_s=30, what=f"worker {pid} stopped")
        try:
            lines = "".join(envelope(PRESS_1, f"q-{i}") + "\n" for i in range(SENT))
            sent = publish_lines(relay.ot, relay.plant.cred(PRESS_1), f"{PRESS_1}/telemetry", lines)
            assert sent.returncode == 0, sent.stderr  # the broker acknowledged every one

            def overflow() -> list[dict[str, Any]]:
                return [e for e in relay.audit_events() if e["action"] == "relay.broker.overflow"]

            wait_for(overflow, timeout_s=60, what="the overflow audit record")
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        records = overflow()
        assert {e["details"]["broker"] for e in records} == {"ot"}
        dropped = sum(e["details"]["count"] for e in records)
        print(f"dropped {dropped} of {SENT}")  # -s shows it
        # Past the worker's in-flight window and the queue, the rest were dropped (measured).
        assert dropped == SENT - INFLIGHT - QUEUED
        assert relay.appliance.status()["broker_dropped"] == {"ot": dropped}
        wait_for(lambda: f'idmz_relay_broker_dropped_total{{broker="ot"}} {float(dropped)}'
                 in relay.metrics(), timeout_s=30, what="the dropped metric")  # fmt: skip
        code, health = relay.health()
        assert code == 503 and any("dropped" in p for p in health["problems"])  # type: ignore[union-attr]
    finally:
        stop_relay(relay)
