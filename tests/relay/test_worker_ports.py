"""The `Worker` runs on the ports it is given: the same pipeline as on live brokers, here on
in-memory links (its spool, dedup window and retention are real files in a temporary home)."""

from __future__ import annotations

from pathlib import Path

from relay.ot_source import Delivery
from relay.pipeline import Item
from relay.worker import Worker
from tests.relay.conftest import POLICY_PATH, PRESS_1, PRESS_2, envelope
from tests.support.relay_fakes import MemoryAudit, MemoryIT, MemoryOTLink, memory_worker


def _worker(home: Path, audit: MemoryAudit) -> tuple[Worker, MemoryOTLink, MemoryIT]:
    worker, _, ot, it = memory_worker(home, POLICY_PATH.read_text(), str(POLICY_PATH), audit)
    return worker, ot, it


def _deliver(worker: Worker, n: int, topic: str, payload: str) -> None:
    worker.on_delivery(Delivery(topic, payload.encode(), None, False, (0, n, 1)))


def test_spoofed_envelope_is_refused_audited_and_acknowledged_without_reaching_it(
    tmp_path: Path,
) -> None:
    audit = MemoryAudit()
    worker, ot, it = _worker(tmp_path, audit)
    try:
        _deliver(worker, 1, f"{PRESS_1}/telemetry", envelope(PRESS_1, "ok-1"))
        _deliver(worker, 2, f"{PRESS_1}/telemetry", envelope(PRESS_2, "spoof-1"))  # not its own
        assert worker._commit_cycle()
        assert [(ref.msg_id, ref.state.name) for ref in it.inflight if isinstance(ref, Item)] == [
            ("ok-1", "FORWARDED")
        ]
        assert ot.acked == [(0, 2, 1)]  # the refusal: audited, so acknowledged
        refused = [e for e in audit.events if e.action == "relay.message.refused"]
        assert [(e.actor, e.details["msg_id"]) for e in refused] == [(PRESS_1, "spoof-1")]
        assert worker.stats.refused["envelope_device_mismatch"] == 1
        for ref, code in it.receive(1, []):
            worker.on_it_acked(ref, code)
        assert worker._commit_cycle()
        assert ot.acked == [(0, 2, 1), (0, 1, 1)]  # forwarded once IT acknowledged it
        assert worker.stats.forwarded == 1
    finally:
        worker.stop()
