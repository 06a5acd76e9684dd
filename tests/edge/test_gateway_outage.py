"""The whole gateway against the simulator and a real TLS broker: cut the uplink for a minute.

This test takes a little over a minute on purpose: the outage it proves is one minute long.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from edge.outbox import Outbox, OutboxLimits
from edge.plant import Fault
from edge.simulator import SimulatorThread
from edge.sources import Backoff
from edge.uplink import UplinkSettings
from tests.edge.conftest import mtls_broker_config
from tests.edge.harness import (
    GatewayThread,
    signed_scorer,
    simulator_config,
    start_collector,
    train_simulator_model,
)
from tests.support.ca import GATEWAY_ID, ProductCA
from tests.support.mosquitto import start_broker
from tests.support.net import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTAGE_S = 60.0


def test_uplink_cut_for_a_minute_loses_nothing_keeps_order_and_alarms_locally(
    test_ca: ProductCA, simulator: SimulatorThread, tmp_path: Path
) -> None:
    port = free_port()
    bdir = tmp_path / "broker"
    conf = mtls_broker_config(test_ca, bdir, port, persistence=True)
    broker = start_broker(conf, port, bdir)
    # The IT side: a persistent QoS 1 session, so what the broker accepted while the
    # subscriber reconnects after the broker restart is still delivered to it.
    collector = start_collector(
        test_ca, port, tmp_path / "it", client_id="historian", persistent=True
    )
    creds = test_ca.write_credentials(tmp_path / "creds", test_ca.device())
    scorer = signed_scorer(test_ca, train_simulator_model("outage-1"))
    uplink = UplinkSettings(
        host="127.0.0.1",
        port=port,
        credential_dir=creds,
        backfill_messages_per_s=50.0,
        backoff=Backoff(0.2, 2.0),
    )
    cfg = simulator_config(
        simulator,
        tmp_path / "state",
        uplink=uplink,
        outbox=OutboxLimits(max_outbox_bytes=64 * 1024 * 1024),
    )
    gw = GatewayThread(cfg, scorer=scorer).start()
    try:

        def kinds() -> set[str]:
            return {body["kind"] for _, _, body in collector.records()}

        wait_for(
            lambda: {"telemetry", "features", "status"} <= kinds(),
            timeout_s=90,
            what="healthy data on the IT side",
        )
        assert not gw.alarms, "healthy operation raised an alarm"

        # -- the WAN goes away --------------------------------------------------------
        broker.stop()
        t_cut = time.time()
        wait_for(
            lambda: not gw.call(lambda g: g.uplink.stats.connected),
            timeout_s=30,
            what="uplink down",
        )
        simulator.inject(Fault.BEARING_OUTER_RACE)
        wait_for(lambda: gw.alarms, timeout_s=60, what="a local alarm while offline")
        assert not gw.call(lambda g: g.uplink.stats.connected)
        alarm_lines = (tmp_path / "state" / "alarms.jsonl").read_text().splitlines()
        assert json.loads(alarm_lines[0])["asset"] == "press01"
        simulator.inject(Fault.NONE)
        wait_for(
            lambda: time.time() - t_cut >= OUTAGE_S,
            timeout_s=OUTAGE_S + 30,
            interval_s=0.5,
            what="the end of the one-minute outage",
        )
        held = gw.call(lambda g: g.outbox.stats(now=time.time()))
        assert held.depth > 100 and held.oldest_age_s >= OUTAGE_S - 5

        # -- the WAN comes back -------------------------------------------------------
        broker = start_broker(conf, port, bdir)
        t_back = time.time()
        wait_for(
            lambda: gw.call(lambda g: g.outbox.stats(now=time.time()).depth) < 10,
            timeout_s=120,
            what="back-fill",
        )
    finally:
        gw.stop()
    try:
        box = Outbox.open(cfg.outbox_path, cfg.outbox)  # the gateway's, reopened after stop
        stats = box.stats(now=time.time())
        left = {m.id for m in box.next_batch(after_seq=0, limit=100_000)}
        box.close()
        assert stats.dropped == {"overflow": 0, "expired": 0, "refused": 0}
        assert stats.appended == stats.acked + stats.depth

        def received() -> dict[str, dict]:
            return {p["idmz-msg-id"]: body for _, p, body in collector.records()}

        wait_for(
            lambda: len(received()) >= stats.acked,
            timeout_s=60,
            what="every acknowledged message at the IT subscriber",
        )
        got = collector.records()
        ids = [p["idmz-msg-id"] for _, p, _ in got]
        assert all(p["idmz-msg-id"] == body["id"] for _, p, body in got)
        # At least once: every acknowledged message arrived; one still in the outbox may have
        # arrived too (its PUBACK was lost with the connection) and will be sent again.
        assert len(set(ids) - left) >= stats.acked
        # Nothing lost: every message made during the outage is on the IT side.
        offline = [b for b in received().values() if t_cut < _ts(b["ts"]) < t_back]
        assert len(offline) > 100
        assert any(b["kind"] == "anomaly" for b in offline), "the offline alarm went upstream"
        # Order kept: the back-filled messages arrive in the order they were made.
        arrival = [body for _, _, body in got if t_cut < _ts(body["ts"]) < t_back]
        stamps = [_ts(b["ts"]) for b in arrival]
        assert stamps == sorted(stamps)
        assert all(b["device"] == GATEWAY_ID for b in arrival)
    finally:
        collector.stop()
        broker.stop()


def _ts(iso: str) -> float:

    return (
        datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=__import__("datetime").UTC)
        .timestamp()
    )
