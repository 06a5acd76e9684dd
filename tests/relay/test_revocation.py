"""Live revocation: when the CA revokes a device, it is cut off within 5 seconds without
restarting the appliance; its messages still in flight are refused and audited; its reconnects
are refused at TLS; other devices keep flowing."""

from __future__ import annotations

import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pki.authority import RevocationReason
from tests.policies.mqtt_clients import publish
from tests.relay.conftest import Plant, Relay, envelope, start_relay, stop_relay, utcnow
from tests.relay.test_forwarding import ITConsumer, make_live
from tests.support.net import wait_for

pytestmark = pytest.mark.integration
VICTIM = "acme/plant1/stamping/line1/cell2/press-07"
BYSTANDER = "acme/plant1/stamping/line1/cell2/press-08"
CUTOFF_DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def relay(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    plant.cred(VICTIM)
    plant.cred(BYSTANDER)
    r = start_relay(plant, tmp_path_factory.mktemp("relay-revocation"), workers=1)
    try:
        yield r
    finally:
        stop_relay(r)


class DeviceConnection:
    """A gateway's long-lived MQTT 5 connection (paho), recording when the broker drops it."""

    def __init__(self, relay: Relay, device: str) -> None:
        creds = relay.plant.cred(device)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=device, protocol=mqtt.MQTTv5
        )
        ctx = ssl.create_default_context(cafile=str(relay.plant.pki.cafile))
        ctx.load_cert_chain(str(creds.cert), str(creds.key))
        self.client.tls_set_context(ctx)
        self.connected = threading.Event()
        self.dropped_at: float | None = None
        self.client.on_connect = lambda *a: self.connected.set()
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", relay.ot.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(30), "device could not connect"

    def _on_disconnect(self, *_args: object) -> None:
        if self.dropped_at is None:
            self.dropped_at = time.monotonic()
        self.client.disconnect()  # no reconnects: we test those with mosquitto_pub

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _state(pid: int) -> str:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0]


def _worker_pids(relay: Relay) -> list[int]:
    return [pid for pid in relay.appliance.worker_pids() if pid is not None]


def test_revoked_device_is_cut_off_refused_and_its_in_flight_messages_are_audited(
    relay: Relay, tmp_path: Path
) -> None:
    consumer = ITConsumer(relay, tmp_path / "it.txt")
    make_live(relay, consumer, BYSTANDER)
    victim = DeviceConnection(relay, VICTIM)
    # Freeze the workers so the victim's messages are in flight (held by the OT broker for the
    # relay's persistent session) when the CRL changes.
    pids = _worker_pids(relay)
    assert pids, "no worker process to freeze"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    for pid in pids:  # SIGSTOP is asynchronous: wait until the kernel reports it stopped
        wait_for(lambda pid=pid: _state(pid) == "T", timeout_s=30, what=f"worker {pid} stopped")
    try:
        for i in range(3):
            info = victim.client.publish(
                f"{VICTIM}/telemetry", envelope(VICTIM, f"inflight-{i}"), qos=1
            )
            info.wait_for_publish(timeout=30)
        serial = relay.plant.pki.ca.certificates_for(VICTIM)[-1].serial
        revoked_at = time.monotonic()
        relay.plant.pki.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=utcnow())
        wait_for(lambda: victim.dropped_at is not None, timeout_s=30, what="victim disconnected")
        assert victim.dropped_at is not None
        assert victim.dropped_at - revoked_at < CUTOFF_DEADLINE_S
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        victim.close()

    # Its reconnect is refused at TLS.
    again = publish(
        relay.ot,
        relay.plant.cred(VICTIM),
        f"{VICTIM}/telemetry",
        envelope(VICTIM, "after-1"),
        v5=True,
    )
    assert again.returncode != 0

    # The in-flight messages reach the relay after the CRL changed: refused and audited.
    def refused_ids() -> set[str]:
        return {
            str(e["details"]["msg_id"])
            for e in relay.audit_events()
            if e["action"] == "relay.message.refused"
            and e["details"].get("code") == "certificate_revoked"
        }

    wait_for(lambda: refused_ids() >= {"inflight-0", "inflight-1", "inflight-2"}, timeout_s=60,
             what="in-flight messages refused as revoked")  # fmt: skip
    assert any(
        e["action"] == "relay.device.cutoff" and e["resource"] == VICTIM
        for e in relay.audit_events()
    )
    wait_for(lambda: 'reason="certificate_revoked"' in relay.metrics(), timeout_s=30, what="metric")

    # Nothing of the victim's reached IT; the bystander still flows.
    publish(relay.ot, relay.plant.cred(BYSTANDER), f"{BYSTANDER}/status",
            envelope(BYSTANDER, "bystander-after", "status", {}), v5=True)  # fmt: skip
    wait_for(
        lambda: consumer.payloads_with("bystander-after"), timeout_s=60, what="bystander flows"
    )
    assert not consumer.payloads_with("inflight-")
    consumer.stop()
