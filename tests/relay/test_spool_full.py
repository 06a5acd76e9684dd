"""A full spool holds, it never drops: with the IT broker down and a tiny spool, the relay
stops acknowledging on OT once the spool is full, raises the ``spool_full`` alarm (metric,
health, snapshot), and after the IT broker returns every message the OT broker acknowledged
to a gateway reaches IT, in order per device, with nothing dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config import RelayLimits
from tests.relay.conftest import Plant, Relay, start_relay, stop_relay
from tests.relay.gateways import (
    Gateway,
    PersistentConsumer,
    check_delivery,
    stream,
    wait_consumer_live,
)
from tests.relay.test_faults import DEVICES, RATE_PER_S
from tests.support.net import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPOOL_BYTES = 16 * 1024  # a few dozen messages


@pytest.fixture
def relay(plant: Plant, tmp_path: Path) -> Iterator[Relay]:
    for d in DEVICES:
        plant.cred(d)
    limits = RelayLimits(spool_max_bytes=SPOOL_BYTES, drain_rate_per_s=500)
    r = start_relay(plant, tmp_path / "home", workers=1, limits=limits)
    try:
        yield r
    finally:
        stop_relay(r)


def test_a_full_spool_holds_and_loses_nothing(relay: Relay, tmp_path: Path) -> None:
    consumer = PersistentConsumer(relay, tmp_path / "it.txt", f"spool-full-{time.monotonic_ns()}")
    gateways = [Gateway(relay, d) for d in DEVICES]
    it = relay.appliance.broker("it")
    wait_consumer_live(relay, consumer, DEVICES[0])
    it.pause()
    wait_for(lambda: not relay.health()[1]["workers"]["worker-0"]["it_connected"],  # type: ignore[index]
             timeout_s=30, what="relay notices the IT outage")  # fmt: skip

    count = int(12 * RATE_PER_S)  # ~540 envelopes, ~100 KiB: far more than the spool holds
    stop = threading.Event()
    streamer = threading.Thread(target=stream, args=(gateways, count, RATE_PER_S, stop))
    streamer.start()
    try:
        wait_for(lambda: relay.snapshot_total("spool_full_events") > 0, timeout_s=60,
                 what="the spool reaching spool_max_bytes")  # fmt: skip
        status, health = relay.health()
        assert status == 503
        assert any("spool full" in p for p in health["problems"])  # type: ignore[union-attr]
        assert "idmz_relay_spool_full{" in relay.metrics()
        # Held, not dropped: the spool stays at its bound while gateways keep publishing.
        time.sleep(3)
        assert relay.snapshot_total("spool_bytes") <= SPOOL_BYTES
        assert relay.snapshot_total("dropped") == 0
        streamer.join(timeout=count / RATE_PER_S + 60)
        assert not streamer.is_alive()
    finally:
        stop.set()
        it.resume()

    wait_for(lambda: all(gw.acked >= set(gw.sent) for gw in gateways), timeout_s=120,
             what="every gateway message acknowledged by the OT broker")  # fmt: skip
    wanted = set().union(*(gw.acked for gw in gateways))
    wait_for(lambda: wanted <= set(consumer.ids()), timeout_s=180, interval_s=0.5,
             what="every acknowledged message on the IT side")  # fmt: skip
    unique, _duplicates = check_delivery(gateways, consumer.ids())  # order per device
    assert unique >= count * len(DEVICES)
    wait_for(lambda: relay.snapshot_total("spool_bytes") == 0, timeout_s=60, what="spool drained")
    wait_for(lambda: relay.health()[0] == 200, timeout_s=30, what="alarm cleared")
    assert 'idmz_relay_dropped_total{worker="worker-0"} 0.0' in relay.metrics()
