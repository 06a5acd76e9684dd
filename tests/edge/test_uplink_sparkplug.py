"""The gateway as a Sparkplug B edge node (``[uplink] format = "sparkplug"``, ADR 0110), on a
real Mosquitto with TLS, decoded by an independent implementation (pysparkplug) as the host."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pysparkplug as spb
import pytest
from paho.mqtt import client as paho

from edge.envelope import envelope_bytes
from edge.outbox import Outbox, OutboxLimits
from edge.sources import Backoff
from edge.sparkplug import EdgeNodeState
from edge.uplink import SparkplugUplink, Uplink, UplinkSettings
from tests.edge.harness import LoopThread
from tests.support.ca import GATEWAY_ID, ProductCA
from tests.support.mosquitto import Broker
from tests.support.net import wait_for

pytestmark = pytest.mark.integration
MT = spb.MessageType


def telemetry(speed: float, temp: float) -> dict[str, object]:
    return {"tags": [
        {"name": "speed", "value": speed, "unit": "rpm", "quality": "good", "asset": "spindle"},
        {"name": "temp", "value": temp, "unit": "degC", "quality": "good", "asset": "spindle"},
    ]}  # fmt: skip


class Host:
    """A host application: paho for the transport, pysparkplug to decode (births first)."""

    def __init__(self, test_ca: ProductCA, port: int, workdir: Path) -> None:
        creds = test_ca.device("acme/plant1/it/x/y/host")
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "c.pem").write_bytes(creds.cert_pem + creds.chain_pem)
        (workdir / "c.key").write_bytes(creds.key_pem)
        (workdir / "ca.pem").write_bytes(test_ca.root_pem)
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="host", protocol=paho.MQTTv5)
        c.tls_set(ca_certs=str(workdir / "ca.pem"), certfile=str(workdir / "c.pem"),
                  keyfile=str(workdir / "c.key"))  # fmt: skip
        c.on_message = self._on_message
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.connect("127.0.0.1", port)
        c.subscribe("spBv1.0/#", qos=1)
        c.loop_start()
        self.client = c
        wait_for(self.subscribed.is_set, timeout_s=30, what="host subscribed")

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def of(self, mtype: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t.split("/")[2] == mtype]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def put(box: Outbox, kind: str, data: dict[str, object], now: float) -> None:
    box.append(f"{GATEWAY_ID}/{kind}", envelope_bytes(f"m-{now}", now, GATEWAY_ID, kind, data),
               now=now, msg_id=f"m-{now}")  # fmt: skip


def test_the_gateway_births_then_sends_only_changes_and_its_bdseq_survives_a_restart(
    test_ca: ProductCA, mtls_broker: Broker, tmp_path: Path
) -> None:
    creds = test_ca.write_credentials(tmp_path / "creds", test_ca.device())
    host = Host(test_ca, mtls_broker.port, tmp_path / "host")
    box = Outbox.open(tmp_path / "o.db", OutboxLimits())
    sp = SparkplugUplink("plant1", "press-07", tmp_path / "sparkplug-bdseq")
    settings = UplinkSettings(host="127.0.0.1", port=mtls_broker.port, credential_dir=creds,
                              connect_timeout_s=5.0, backoff=Backoff(initial_s=0.2, max_s=1.0),
                              sparkplug=sp)  # fmt: skip
    now = time.time()
    put(box, "telemetry", telemetry(1500.0, 40.0), now - 5)  # waits in the outbox: back-fill
    uplink = Uplink(settings, box)
    runner = LoopThread(uplink.run)
    try:
        wait_for(lambda: box.stats(now=0).depth == 0, timeout_s=30, what="outbox drained")
        put(box, "telemetry", telemetry(1500.0, 41.0), now)  # only temp changed
        put(box, "telemetry", telemetry(1500.0, 41.0), now + 1)  # nothing changed
        runner.call_soon(uplink.notify)
        wait_for(lambda: box.stats(now=0).depth == 0 and len(host.of("NDATA")) >= 2,
                 timeout_s=30, what="data at the host")  # fmt: skip
        births = host.of("NBIRTH")
        assert births, "no NBIRTH"
        birth = spb.NBirth.decode(births[-1])
        names = {m.name: m for m in birth.metrics}
        assert names["bdSeq"].value == 0
        assert {"telemetry/spindle/speed", "telemetry/spindle/temp"} <= set(names)
        first, second = (spb.NData.decode(p, birth=birth) for p in host.of("NDATA")[:2])
        assert [(m.name, m.is_historical) for m in first.metrics] == [
            ("telemetry/spindle/speed", True), ("telemetry/spindle/temp", True)
        ]  # fmt: skip
        assert [(m.name, m.value) for m in second.metrics] == [("telemetry/spindle/temp", 41.0)]
        assert len(host.of("NDATA")) == 2  # the unchanged third message sent nothing
        assert second.seq == (first.seq + 1) % 256
    finally:
        runner.stop()
    # A clean stop is an intentional death with the birth's bdSeq.
    wait_for(lambda: host.of("NDEATH"), timeout_s=30, what="NDEATH")
    assert spb.NDeath.decode(host.of("NDEATH")[-1]).bd_seq_metric.value == 0
    # Restarted, the node is born again with the next bdSeq (persisted).
    born = len(host.of("NBIRTH"))
    uplink = Uplink(settings, box)
    runner = LoopThread(uplink.run)
    try:
        wait_for(lambda: len(host.of("NBIRTH")) > born, timeout_s=30, what="the restart's NBIRTH")
        assert spb.NBirth.decode(host.of("NBIRTH")[-1]).metrics[0].value == 1
        assert sp.bd_seq_path.read_text().strip() == "1"
    finally:
        runner.stop()
        host.stop()
        box.close()


def test_a_metric_the_birth_did_not_define_causes_a_rebirth_first() -> None:
    node = EdgeNodeState("plant1", "press-07", GATEWAY_ID)
    node.birth(bd_seq=4, now_ms=1)
    envelope = envelope_bytes("a", 10.0, GATEWAY_ID, "anomaly",
                              {"asset": "spindle", "score": 3.5, "alarm": "advisory"})  # fmt: skip
    changed, ts_ms, rebirth = node.learn(envelope)
    assert rebirth and ts_ms == 10_000
    assert {c["name"] for c in changed} == {"anomaly/spindle/score", "anomaly/spindle/alarm"}
    topic, raw = node.birth(bd_seq=node.bd_seq, now_ms=2)
    born = spb.NBirth.decode(raw)
    assert topic == "spBv1.0/plant1/NBIRTH/press-07"
    by_name = {m.name: m for m in born.metrics}
    assert by_name["bdSeq"].value == 4 and by_name["anomaly/spindle/alarm"].value == "advisory"
    assert node.learn(envelope) == ([], 10_000, False)  # sent with the birth: nothing changed
