"""Live revocation: when the CA revokes a device, it is cut off within 5 seconds without
restarting the appliance or the OT broker (the revoke plugin evicts only that device); its
messages still in flight are refused and audited; its reconnects are refused at TLS; other
gateways stay connected on the same session and keep flowing. Without the plugin the appliance
falls back to restarting the OT broker."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pki.authority import RevocationReason
from relay.errors import RevokePluginUnavailableError
from tests.relay.conftest import Plant, Relay, envelope, start_relay, stop_relay, utcnow
from tests.relay.test_forwarding import ITConsumer, make_live
from tests.support.mqtt import paho_client, publish
from tests.support.net import wait_for

pytestmark = pytest.mark.integration
VICTIM = "acme/plant1/stamping/line1/cell2/press-07"
BYSTANDER = "acme/plant1/stamping/line1/cell2/press-08"
FALLBACK_VICTIM = "acme/plant1/stamping/line1/cell2/press-09"
CUTOFF_DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def relay(
    plant: Plant, revoke_plugin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relay]:
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
        self.client = paho_client(relay.ot, relay.plant.cred(device), device)
        self.connected = threading.Event()
        self.connects = 0  # CONNACKs received: 1 means one session, never reconnected
        self.dropped_at: float | None = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", relay.ot.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(30), "device could not connect"

    def _on_connect(self, *_args: object) -> None:
        self.connects += 1
        self.connected.set()

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


def _connected_as(relay: Relay, client_id: str) -> int:
    """How often the OT broker logged a connection with this client id."""
    log = (relay.home / "brokers" / "ot.log").read_text(errors="replace")
    return log.count(f" as {client_id} (")


def test_revoked_device_is_cut_off_refused_and_its_in_flight_messages_are_audited(
    relay: Relay, tmp_path: Path
) -> None:
    consumer = ITConsumer(relay, tmp_path / "it.txt")
    make_live(relay, consumer, BYSTANDER)
    ot_broker = relay.appliance.broker("ot")
    ot_pid = ot_broker.pid
    # make_live's probes connected as the bystander too (client id = CN, ADR 0058): count after.
    bystander_connects = _connected_as(relay, BYSTANDER)
    bystander = DeviceConnection(relay, BYSTANDER)
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
        cutoff_s = victim.dropped_at - revoked_at
        print(f"cut-off {cutoff_s:.2f}s after the CRL was written")  # -s shows it; see ADR 0057
        assert cutoff_s < CUTOFF_DEADLINE_S
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        victim.close()

    # Its reconnect is refused at TLS (the CRL re-read on SIGHUP).
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

    # Nothing of the victim's reached IT. The other gateway was never disconnected: the same
    # connection (one CONNACK, no on_disconnect, one "New client connected" in the broker's log)
    # still publishes, and the broker is the same process, never restarted.
    info = bystander.client.publish(
        f"{BYSTANDER}/status", envelope(BYSTANDER, "bystander-after", "status", {}), qos=1
    )
    info.wait_for_publish(timeout=30)
    wait_for(lambda: consumer.lines_with("bystander-after"), timeout_s=60, what="bystander flows")
    assert not consumer.lines_with("inflight-")
    assert bystander.dropped_at is None
    assert bystander.connects == 1
    assert bystander.client.is_connected()
    assert _connected_as(relay, BYSTANDER) == bystander_connects + 1
    assert ot_broker.pid == ot_pid and ot_broker.running()
    assert relay.appliance.status()["broker_restarts"]["ot"] == 0
    bystander.close()
    consumer.stop()


def test_without_the_plugin_revocation_falls_back_to_restarting_the_ot_broker(
    plant: Plant, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable() -> Path:
        raise RevokePluginUnavailableError("no C compiler 'gcc' on PATH (simulated)")

    plant.cred(FALLBACK_VICTIM)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("relay.appliance.build_plugin", unavailable)
        fallback = start_relay(plant, tmp_path_factory.mktemp("relay-fallback"), workers=1)
    try:
        assert "revoke plugin unavailable" in caplog.text
        ot_conf = (fallback.home / "brokers" / "ot.conf").read_text().splitlines()
        assert not [line for line in ot_conf if line.startswith("plugin")]
        ot_broker = fallback.appliance.broker("ot")
        ot_pid = ot_broker.pid
        victim = DeviceConnection(fallback, FALLBACK_VICTIM)
        try:
            serial = plant.pki.ca.certificates_for(FALLBACK_VICTIM)[-1].serial
            revoked_at = time.monotonic()
            plant.pki.ca.revoke(serial, RevocationReason.KEY_COMPROMISE, now=utcnow())
            wait_for(lambda: victim.dropped_at is not None, timeout_s=30, what="victim dropped")
            assert victim.dropped_at is not None
            print(f"fallback cut-off {victim.dropped_at - revoked_at:.2f}s (broker restart)")
            assert victim.dropped_at - revoked_at < CUTOFF_DEADLINE_S
        finally:
            victim.close()
        assert ot_broker.pid != ot_pid
        assert fallback.appliance.status()["broker_restarts"]["ot"] == 1
        again = publish(fallback.ot, plant.cred(FALLBACK_VICTIM), f"{FALLBACK_VICTIM}/telemetry",
                        envelope(FALLBACK_VICTIM, "after-fallback"), v5=True)  # fmt: skip
        assert again.returncode != 0
    finally:
        stop_relay(fallback)
