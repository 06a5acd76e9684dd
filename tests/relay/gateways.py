"""Test gateways and an IT consumer for the fault tests.

A `Gateway` is what the edge does: MQTT 5, QoS 1, a persistent session (clean_start=False,
session expiry), a stable message id per message (envelope ``id`` and ``idmz-msg-id``), and
paho's own resend of unacknowledged messages after a reconnect. It records which ids the OT
broker acknowledged: those are the ones that must never be lost.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.relay.conftest import HISTORIAN, Relay, envelope
from tests.support.mqtt import WITH_PROPERTIES, Subscriber, paho_client, publish
from tests.support.net import wait_for


class Gateway:
    def __init__(self, relay: Relay, device: str) -> None:
        self.device = device
        self.acked: set[str] = set()
        self.sent: list[str] = []
        self._mids: dict[int, str] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self.client = paho_client(relay.ot, relay.plant.cred(device), device)
        self.client.reconnect_delay_set(1, 2)
        self.client.max_inflight_messages_set(100)
        self.client.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect_async("127.0.0.1", relay.ot.port, keepalive=10, clean_start=False,
                                  properties=props)  # fmt: skip
        self.client.loop_start()

    def _on_publish(self, _c: object, _u: object, mid: int, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            return
        with self._lock:  # the PUBACK may come before publish() returned the mid
            msg_id = self._mids.pop(mid, None)
            if msg_id is None:
                self._early.add(mid)
            else:
                self.acked.add(msg_id)

    def publish(self, seq: int) -> None:
        msg_id = f"{self.device.rsplit('/', 1)[1]}-{seq:06d}"
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("idmz-msg-id", msg_id)]
        info = self.client.publish(
            f"{self.device}/telemetry", envelope(self.device, msg_id), qos=1, properties=props
        )
        with self._lock:
            self.sent.append(msg_id)
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.acked.add(msg_id)
            else:
                self._mids[info.mid] = msg_id

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stream(gateways: list[Gateway], count: int, rate_per_s: float, stop: threading.Event) -> None:
    """Publish ``count`` messages per gateway at ``rate_per_s`` each, in order."""
    start = time.monotonic()
    for seq in range(count):
        if stop.is_set():
            return
        for gw in gateways:
            gw.publish(seq)
        delay = start + (seq + 1) / rate_per_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class PersistentConsumer(Subscriber):
    """`mosquitto_sub` on IT with a persistent session, so an IT broker restart loses nothing
    on the consumer's side either; prints topic, user properties and payload per line.
    `stop()` goes offline (the session stays on the broker and queues for it); `start()`
    connects again and receives what the broker queued meanwhile."""

    def __init__(self, relay: Relay, out: Path, client_id: str) -> None:
        creds = relay.plant.cred(HISTORIAN)
        super().__init__(
            relay.it, creds, "acme/#", out,
            client_id=client_id, persistent=True, line_format=WITH_PROPERTIES,
            track=relay.subscribers,
        )  # fmt: skip

    def ids(self) -> list[str]:
        """Message ids in arrival order (duplicates included)."""
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            if "idmz-msg-id:" in line:
                out.append(line.split("idmz-msg-id:", 1)[1].split()[0].split("\t")[0])
        return out


def wait_consumer_live(relay: Relay, consumer: PersistentConsumer, device: str) -> None:
    """Publish probes from ``device`` until one reaches ``consumer``: its subscription is in
    place (a probe sent before mosquitto_sub subscribed is, rightly, not for it)."""
    probes = iter(range(1000))

    def live() -> bool:
        n = next(probes)
        publish(relay.ot, relay.plant.cred(device), f"{device}/status",
                envelope(device, f"probe-{n}", "status", {}), v5=True)  # fmt: skip
        return any(i.startswith("probe-") for i in consumer.ids())

    wait_for(live, timeout_s=90, interval_s=0.5, what="consumer live")


def check_delivery(gateways: list[Gateway], received: list[str]) -> tuple[int, int]:
    """Assert zero acknowledged messages lost and order per device kept; return
    (unique delivered, duplicates)."""
    seen: set[str] = set()
    last: dict[str, str] = {}
    duplicates = 0
    names = {gw.device.rsplit("/", 1)[1] for gw in gateways}
    for msg_id in received:
        if msg_id.rsplit("-", 1)[0] not in names:
            continue
        if msg_id in seen:
            duplicates += 1  # same idmz-msg-id: detectable, and dropped by any consumer
            continue
        seen.add(msg_id)
        device = msg_id.rsplit("-", 1)[0]
        assert msg_id > last.get(device, ""), f"order broken: {msg_id} after {last[device]}"
        last[device] = msg_id
    for gw in gateways:
        lost = gw.acked - seen
        assert not lost, (
            f"{len(lost)} acknowledged messages of {gw.device} lost: {sorted(lost)[:5]}"
        )
    return len(seen), duplicates
