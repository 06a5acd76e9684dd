"""Sparkplug B 3.0 across the one-way relay (ADR 0110), on real Mosquitto with TLS, with an
independent implementation (pysparkplug, tests/support/sparkplug_peer.py) as the edge node on
OT and as the host application on IT."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pysparkplug as spb
import pytest
from paho.mqtt import client as paho

from policies.sparkplug_codec import DOUBLE, UINT64, encode_sparkplug
from tests.relay.conftest import HISTORIAN, RELAY_ID, Plant, Relay, start_relay, stop_relay
from tests.support.net import wait_for
from tests.support.sparkplug_peer import HostApp, PeerClient, edge_node, metric
from tests.support.sparkplug_policy import GROUP, HOST_ID, NODE_1, NODE_2, sparkplug_policy_text

MT = spb.MessageType


@pytest.fixture(scope="module")
def relay(plant: Plant, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    for node in (NODE_1, NODE_2):
        plant.cred(node)  # registered before the brokers are rendered
    r = start_relay(plant, tmp_path_factory.mktemp("spb-home"), policy_text=sparkplug_policy_text())
    try:
        yield r
    finally:
        stop_relay(r)


@pytest.fixture
def host(relay: Relay) -> Iterator[HostApp]:
    app = HostApp(relay.it, relay.plant.cred(HISTORIAN))
    app.start(GROUP)
    wait_for(app.subscribed.is_set, timeout_s=30, what="host subscribed")
    try:
        yield app
    finally:
        app.stop()


def events(relay: Relay, action: str, **details: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in relay.audit_events()
        if e["action"] == action and all(e["details"].get(k) == v for k, v in details.items())
    ]


def refused(relay: Relay, code: str) -> list[dict[str, Any]]:
    return events(relay, "relay.message.refused", code=code)


def raw_publisher(relay: Relay, identity: str) -> PeerClient:
    client = PeerClient(relay.ot, relay.plant.cred(identity), client_id=identity)
    client._client.connect("127.0.0.1", relay.ot.port)
    client._client.loop_start()
    wait_for(client._client.is_connected, timeout_s=30, what=f"{identity} connected")
    return client


def born(
    relay: Relay, host: HostApp, identity: str, node_id: str, *metrics: spb.Metric
) -> tuple[spb.EdgeNode, PeerClient]:
    """A pysparkplug edge node for ``identity``, connected, its NBIRTH seen by ``host``."""
    node, client = edge_node(relay.ot, relay.plant.cred(identity), group=GROUP, node=node_id,
                             metrics=metrics)  # fmt: skip
    node.connect("127.0.0.1", port=relay.ot.port)
    wait_for(lambda: host.of(MT.NBIRTH), timeout_s=60, what=f"NBIRTH of {node_id}")
    return node, client


def now_ms() -> int:
    return int(time.time() * 1000)


def test_births_data_and_will_reach_the_host_decoded(relay: Relay, host: HostApp) -> None:
    node, client = edge_node(
        relay.ot, relay.plant.cred(NODE_1), group=GROUP, node="press-01",
        metrics=(metric("spindle/speed", 1500.0), metric("spindle/temp", 41.5)),
    )  # fmt: skip
    node.connect("127.0.0.1", port=relay.ot.port)
    wait_for(lambda: host.of(MT.NBIRTH), timeout_s=60, what="NBIRTH at the IT host")
    node.register(spb.Device("plc", (metric("cycle", 0.0),)))
    wait_for(lambda: host.of(MT.DBIRTH), timeout_s=60, what="DBIRTH at the IT host")
    node.update((metric("spindle/speed", 1510.0),))
    node.update_device("plc", (metric("cycle", 12.0),))
    wait_for(lambda: host.of(MT.NDATA) and host.of(MT.DDATA), timeout_s=60, what="data at IT")
    ndata = host.of(MT.NDATA)[0].payload
    assert [(m.name, m.value) for m in ndata.metrics] == [("spindle/speed", 1510.0)]
    assert [(m.name, m.value) for m in host.of(MT.DDATA)[0].payload.metrics] == [("cycle", 12.0)]
    birth = host.of(MT.NBIRTH)[0].payload
    bd_seq = next(m.value for m in birth.metrics if m.name == "bdSeq")
    client.crash()  # the broker publishes the will: NDEATH with the birth's bdSeq
    wait_for(lambda: host.of(MT.NDEATH), timeout_s=60, what="NDEATH (the will) at the IT host")
    death = host.of(MT.NDEATH)[0].payload
    assert death.bd_seq_metric.value == bd_seq
    wait_for(lambda: events(relay, "relay.sparkplug.death", bd_seq=bd_seq), timeout_s=30,
             what="death audited")  # fmt: skip
    assert events(relay, "relay.sparkplug.birth", bd_seq=bd_seq, node=f"{GROUP}/press-01")


def _late_host(relay: Relay, seen: list[paho.MQTTMessage]) -> paho.Client:
    creds = relay.plant.cred(HISTORIAN)
    late = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=HISTORIAN, protocol=paho.MQTTv5)
    late.tls_set(ca_certs=str(relay.it.cafile), certfile=str(creds.cert), keyfile=str(creds.key))
    late.on_message = lambda _c, _u, msg: seen.append(msg)
    late.connect("127.0.0.1", relay.it.port)
    late.subscribe([(f"$sparkplug/certificates/spBv1.0/{GROUP}/#", 1), (f"spBv1.0/{GROUP}/#", 1)])
    late.loop_start()
    return late


def test_a_late_host_decodes_aliased_ndata_from_the_birth_cache(relay: Relay) -> None:
    speed = spb.Metric(timestamp=now_ms(), name="speed", datatype=spb.DataType.DOUBLE,
                       value=1.0, alias=7)  # fmt: skip
    node, client = edge_node(relay.ot, relay.plant.cred(NODE_1), group=GROUP, node="press-01",
                             metrics=(speed,))  # fmt: skip
    before = relay.snapshot_total("forwarded")
    node.connect("127.0.0.1", port=relay.ot.port)
    # The birth and its cache copy are at IT (acknowledged there) before the late host exists.
    wait_for(lambda: relay.snapshot_total("forwarded") >= before + 2, timeout_s=60,
             what="birth and cache copy at IT")  # fmt: skip
    seen: list[paho.MQTTMessage] = []
    late = _late_host(relay, seen)
    try:
        cache = f"$sparkplug/certificates/spBv1.0/{GROUP}/NBIRTH/press-01"
        wait_for(lambda: any(m.topic == cache for m in seen), timeout_s=60, what="cached birth")
        cached = [m for m in seen if m.topic == cache][-1]
        assert cached.retain
        props = dict(cached.properties.UserProperty)  # type: ignore[union-attr]
        assert props["idmz-sparkplug-birth"] == "online"
        assert props["idmz-device"] == NODE_1
        birth = spb.NBirth.decode(cached.payload)
        # NDATA by alias only, without datatype: only the birth can say what it is.
        aliased = spb.Metric(timestamp=now_ms(), name=None, datatype=spb.DataType.DOUBLE,
                             value=2.5, alias=7)  # fmt: skip
        topic = spb.Topic(group_id=GROUP, message_type=MT.NDATA, edge_node_id="press-01")
        payload = spb.NData(timestamp=now_ms(), seq=node._seq, metrics=(aliased,))
        client.publish(spb.Message(topic, payload, spb.QoS.AT_MOST_ONCE, False),
                       include_dtypes=False)  # fmt: skip
        ndata_topic = f"spBv1.0/{GROUP}/NDATA/press-01"
        wait_for(lambda: any(m.topic == ndata_topic for m in seen), timeout_s=60, what="NDATA")
        forwarded = next(m for m in seen if m.topic == ndata_topic)
        raw = forwarded.payload
        assert raw == payload.encode(include_dtypes=False)  # byte for byte, never re-encoded
        provenance = dict(forwarded.properties.UserProperty)  # type: ignore[union-attr]
        assert provenance["idmz-device"] == NODE_1
        assert set(provenance) >= {"idmz-cert-sha256", "idmz-policy-sha256", "idmz-msg-id"}
        assert not forwarded.retain
        decoded = spb.NData.decode(raw, birth=birth)
        assert [(m.name, m.datatype, m.value) for m in decoded.metrics] == [
            ("speed", spb.DataType.DOUBLE, 2.5)
        ]
        # Death marks the cached birth stale (same bytes, retained).
        client.crash()
        wait_for(lambda: any(m.topic == cache and dict(m.properties.UserProperty)
                 .get("idmz-sparkplug-birth") == "stale" for m in seen),  # type: ignore[union-attr]
                 timeout_s=60, what="stale birth")  # fmt: skip
        stale = [m for m in seen if m.topic == cache][-1]
        assert stale.payload == cached.payload
    finally:
        late.loop_stop()
        late.disconnect()


def test_node_restart_with_a_new_bdseq_is_a_new_session(relay: Relay, host: HostApp) -> None:
    births = []
    for _ in range(2):
        node, client = edge_node(relay.ot, relay.plant.cred(NODE_2), group=GROUP,
                                 node="press-02", metrics=(metric("load", 1.0),))  # fmt: skip
        node.connect("127.0.0.1", port=relay.ot.port)
        n = len(births) + 1
        wait_for(lambda n=n: len(host.of(MT.NBIRTH)) >= n, timeout_s=60, what=f"NBIRTH {n}")
        births.append(host.of(MT.NBIRTH)[-1])
        node.update((metric("load", 2.0),))
        wait_for(lambda n=n: len(host.of(MT.NDATA)) >= n, timeout_s=60, what=f"NDATA {n}")
        client.crash()
        wait_for(lambda n=n: len(host.of(MT.NDEATH)) >= n, timeout_s=60, what=f"NDEATH {n}")
    bd = [next(m.value for m in b.payload.metrics if m.name == "bdSeq") for b in births]
    assert bd[0] != bd[1]
    assert not refused(relay, "sparkplug_no_birth")


def test_a_sequence_gap_is_forwarded_and_audited_as_possible_loss(
    relay: Relay, host: HostApp
) -> None:
    node, client = born(relay, host, NODE_2, "press-02", metric("load", 1.0))
    before = len(events(relay, "relay.sparkplug.gap"))
    _ = node._seq, node._seq  # two messages "lost" on the plant side
    node.update((metric("load", 3.0),))
    wait_for(lambda: host.of(MT.NDATA), timeout_s=60, what="NDATA after the gap")
    wait_for(lambda: len(events(relay, "relay.sparkplug.gap")) > before, timeout_s=30,
             what="gap audited")  # fmt: skip
    gap = events(relay, "relay.sparkplug.gap")[-1]
    assert gap["details"]["missing"] == 2 and gap["details"]["node"] == f"{GROUP}/press-02"
    assert gap["actor"] == NODE_2
    wait_for(lambda: "idmz_relay_sparkplug_gaps_total" in relay.metrics(), timeout_s=30,
             what="gap metric")  # fmt: skip
    client.crash()


def test_a_device_cannot_publish_under_another_nodes_id(relay: Relay, host: HostApp) -> None:
    intruder = raw_publisher(relay, NODE_2)  # press-02's certificate
    try:
        raw = encode_sparkplug(timestamp=now_ms(), seq=0, metrics=[
            {"name": "bdSeq", "datatype": UINT64, "long_value": 1}])  # fmt: skip
        for topic in (f"spBv1.0/{GROUP}/NBIRTH/press-01", f"spBv1.0/{GROUP}/DBIRTH/press-02/robot"):
            intruder._client.publish(topic, raw, qos=1).wait_for_publish(timeout=30)

        def denied() -> bool:
            found = [e["resource"] for e in events(relay, "relay.message.refused",
                                                    code="broker_acl_denied")]  # fmt: skip
            return f"spBv1.0/{GROUP}/NBIRTH/press-01" in found and any("robot" in t for t in found)

        wait_for(denied, timeout_s=60, what="the broker's refusals audited")
        assert not [m for m in host.of(MT.NBIRTH) if m.topic.edge_node_id == "press-01"]
    finally:
        intruder._client.loop_stop()
        intruder._client.disconnect()


def test_malformed_protobuf_and_oversized_metric_arrays_are_refused_and_audited(
    relay: Relay, host: HostApp
) -> None:
    sender = raw_publisher(relay, NODE_2)
    try:
        birth = encode_sparkplug(timestamp=now_ms(), seq=0, metrics=[
            {"name": "bdSeq", "datatype": UINT64, "long_value": 9},
            {"name": "x", "datatype": DOUBLE, "alias": 1, "double_value": 0.0}])  # fmt: skip
        huge = encode_sparkplug(timestamp=now_ms(), seq=1, metrics=[
            {"alias": 1, "double_value": float(i)} for i in range(501)])  # fmt: skip
        for topic, payload in (
            (f"spBv1.0/{GROUP}/NBIRTH/press-02", birth),
            (f"spBv1.0/{GROUP}/NDATA/press-02", b"\x0a\xff\xff\xff\xff\x0f garbage"),
            (f"spBv1.0/{GROUP}/NDATA/press-02", huge),
        ):
            sender._client.publish(topic, payload, qos=1).wait_for_publish(timeout=30)
        wait_for(lambda: refused(relay, "sparkplug_malformed")
                 and refused(relay, "sparkplug_too_many_metrics"), timeout_s=60,
                 what="both refusals audited")  # fmt: skip
        assert refused(relay, "sparkplug_malformed")[0]["actor"] == NODE_2
        assert not host.of(MT.NDATA)
    finally:
        sender._client.loop_stop()
        sender._client.disconnect()


def _ot_watch(relay: Relay, out: Path, identity: str, *topics: str) -> subprocess.Popen[bytes]:
    """mosquitto_sub on the OT broker's bound-id listener as ``<identity>:watch-<n>``, so it
    holds a session of its own beside the identity's edge node."""
    _ot_watch.count += 1  # type: ignore[attr-defined]
    endpoint = relay.bound("ot")
    args = ["mosquitto_sub", *endpoint.args(relay.plant.cred(identity)), "-V", "mqttv5",
            "-q", "1", "-v", "-i", f"{identity}:watch-{_ot_watch.count}"]  # type: ignore[attr-defined]  # fmt: skip
    for topic in topics:
        args += ["-t", topic]
    return subprocess.Popen(args, stdout=out.open("w"), stderr=subprocess.STDOUT)


_ot_watch.count = 0  # type: ignore[attr-defined]


def test_state_on_ot_comes_from_configuration_and_is_audited(relay: Relay, tmp_path: Path) -> None:
    out = tmp_path / "state.txt"
    watcher = _ot_watch(relay, out, NODE_1, f"spBv1.0/STATE/{HOST_ID}")
    try:
        wait_for(lambda: "online" in out.read_text(), timeout_s=60, what="retained STATE on OT")
        topic, _, body = out.read_text().splitlines()[0].partition(" ")
        assert topic == f"spBv1.0/STATE/{HOST_ID}"
        assert json.loads(body)["online"] is True
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
    audited = events(relay, "relay.sparkplug.state")
    assert audited and audited[0]["after"]["online"] is True


def test_ncmd_and_state_from_it_never_reach_ot(relay: Relay, tmp_path: Path) -> None:
    commands: list[spb.Message] = []
    node, client = edge_node(relay.ot, relay.plant.cred(NODE_1), group=GROUP, node="press-01",
                             metrics=(metric("speed", 1.0),),
                             on_command=lambda _n, m: commands.append(m))  # fmt: skip
    out = tmp_path / "ot.txt"
    # The widest OT view of Sparkplug: the relay's identity reads the whole group; the node reads
    # STATE. Neither may see anything from IT.
    watchers = [
        _ot_watch(relay, out, RELAY_ID, f"spBv1.0/{GROUP}/#"),
        _ot_watch(relay, tmp_path / "state.txt", NODE_1, f"spBv1.0/STATE/{HOST_ID}"),
    ]
    try:
        node.connect("127.0.0.1", port=relay.ot.port)

        def live() -> bool:  # the watcher has subscribed once a node message shows up on it
            if client._client.is_connected():
                node.update((metric("speed", 1.5),))
            return b"NDATA/press-01" in out.read_bytes()

        wait_for(live, timeout_s=60, interval_s=0.5, what="OT watcher live")
        seen = out.read_bytes().count(b"NDATA/press-01")
        ncmd = encode_sparkplug(timestamp=now_ms(), metrics=[
            {"name": "Node Control/Rebirth", "datatype": 11, "boolean_value": True}])  # fmt: skip
        offline = json.dumps({"online": False, "timestamp": now_ms()})
        for identity in (HISTORIAN, RELAY_ID):  # a consumer, and the relay's own IT identity
            creds = relay.plant.cred(identity)
            for topic, payload in ((f"spBv1.0/{GROUP}/NCMD/press-01", ncmd),
                                   (f"spBv1.0/STATE/{HOST_ID}", offline.encode())):  # fmt: skip
                p = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=identity)
                p.tls_set(ca_certs=str(relay.it.cafile), certfile=str(creds.cert),
                          keyfile=str(creds.key))  # fmt: skip
                p.connect("127.0.0.1", relay.it.port)
                p.loop_start()
                p.publish(topic, payload, qos=1).wait_for_publish(timeout=30)
                p.loop_stop()
                p.disconnect()
        node.update((metric("speed", 2.0),))  # a later OT message arrives; IT's never do
        wait_for(lambda: out.read_bytes().count(b"NDATA/press-01") > seen, timeout_s=60,
                 what="later OT message")  # fmt: skip
        assert b"NCMD" not in out.read_bytes()
        assert not commands
        state_lines = (tmp_path / "state.txt").read_text().splitlines()
        assert state_lines and all('"online":true' in line for line in state_lines)
    finally:
        for w in watchers:
            w.terminate()
            w.wait(timeout=10)
        client.crash()


def test_a_restarted_worker_still_knows_the_births_no_rebirth_needed(
    relay: Relay, host: HostApp
) -> None:
    import os
    import signal

    node, client = born(relay, host, NODE_2, "press-02", metric("load", 1.0))
    pid = relay.appliance.worker_pids()[0]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # no clean stop: only what it kept on disk survives
    wait_for(lambda: relay.appliance.worker_pids()[0] not in (None, pid), timeout_s=60,
             what="worker restarted")  # fmt: skip
    relay.wait_connected()
    before = len(refused(relay, "sparkplug_no_birth"))
    node.update((metric("load", 4.0),))  # QoS 0: sent again until the new worker has it
    wait_for(lambda: host.of(MT.NDATA) or node.update((metric("load", 4.0),)), timeout_s=60,
             interval_s=1.0, what="NDATA through the restarted worker")  # fmt: skip
    assert len(refused(relay, "sparkplug_no_birth")) == before
    client.crash()


def test_with_two_workers_one_node_is_judged_by_worker_0_alone(
    plant: Plant, tmp_path_factory: pytest.TempPathFactory
) -> None:
    for node in (NODE_1, NODE_2):
        plant.cred(node)
    relay2 = start_relay(plant, tmp_path_factory.mktemp("spb-two"), workers=2,
                         policy_text=sparkplug_policy_text())  # fmt: skip
    host = HostApp(relay2.it, relay2.plant.cred(HISTORIAN))
    try:
        host.start(GROUP)
        wait_for(host.subscribed.is_set, timeout_s=30, what="host subscribed")
        node, client = edge_node(relay2.ot, relay2.plant.cred(NODE_1), group=GROUP,
                                 node="press-01", metrics=(metric("speed", 1.0),))  # fmt: skip
        node.connect("127.0.0.1", port=relay2.ot.port)
        wait_for(lambda: host.of(MT.NBIRTH), timeout_s=60, what="NBIRTH")
        for i in range(20):
            node.update((metric("speed", float(i)),))
        wait_for(lambda: len(host.of(MT.NDATA)) >= 20, timeout_s=60, what="20 NDATA")
        # Shared delivery would split the node between workers: gaps and no-birth refusals.
        assert not events(relay2, "relay.sparkplug.gap")
        assert not refused(relay2, "sparkplug_no_birth")
        assert [m.payload.metrics[0].value for m in host.of(MT.NDATA)] == [
            float(i) for i in range(20)
        ]
        client.crash()
    finally:
        host.stop()
        stop_relay(relay2)


def test_an_ndeath_with_another_sessions_bdseq_is_refused_and_audited(
    relay: Relay, host: HostApp
) -> None:
    # pysparkplug 0.6.1's clean disconnect() sends NDEATH with the *next* connection's bdSeq
    # (it re-arms its will after the birth), not the birth's: a death a host must ignore.
    node, _client = born(relay, host, NODE_2, "press-02", metric("load", 1.0))
    bd_seq = next(m.value for m in host.of(MT.NBIRTH)[-1].payload.metrics if m.name == "bdSeq")
    before = len(refused(relay, "sparkplug_bdseq_mismatch"))
    node.disconnect()
    wait_for(lambda: len(refused(relay, "sparkplug_bdseq_mismatch")) > before, timeout_s=60,
             what="the mismatched NDEATH refused")  # fmt: skip
    refusal = refused(relay, "sparkplug_bdseq_mismatch")[-1]
    assert refusal["actor"] == NODE_2 and f"is {bd_seq}" in refusal["reason"]
    assert not host.of(MT.NDEATH)


def test_an_edge_node_cannot_publish_state_or_commands_on_ot(relay: Relay, tmp_path: Path) -> None:
    """A compromised gateway (valid key) tries to tell every node the primary host is offline
    (so that nodes configured to wait for it stop publishing) and to send another node a
    rebirth: the OT broker refuses both, they are audited, and the STATE stays the
    appliance's."""
    intruder = raw_publisher(relay, NODE_2)
    state, ncmd = f"spBv1.0/STATE/{HOST_ID}", f"spBv1.0/{GROUP}/NCMD/press-01"
    try:
        offline = json.dumps({"online": False, "timestamp": now_ms() + 10_000}).encode()
        rebirth = encode_sparkplug(timestamp=now_ms(), metrics=[
            {"name": "Node Control/Rebirth", "datatype": 11, "boolean_value": True}])  # fmt: skip
        intruder._client.publish(state, offline, qos=1, retain=True).wait_for_publish(timeout=30)
        intruder._client.publish(ncmd, rebirth, qos=1).wait_for_publish(timeout=30)

        def denied() -> bool:  # (the IT broker's refusals of the same topics have other actors)
            found = {e["resource"] for e in refused(relay, "broker_acl_denied")
                     if e["actor"] == NODE_2}  # fmt: skip
            return {state, ncmd} <= found

        wait_for(denied, timeout_s=60, what="the OT broker's refusals audited")
    finally:
        intruder._client.loop_stop()
        intruder._client.disconnect()
    out = tmp_path / "state.txt"
    watcher = _ot_watch(relay, out, NODE_1, state)  # a new subscriber gets the retained STATE
    try:
        wait_for(lambda: "online" in out.read_text(), timeout_s=60, what="retained STATE")
        assert all('"online":true' in line for line in out.read_text().splitlines())
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)
