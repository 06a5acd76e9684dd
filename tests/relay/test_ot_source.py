"""The OT reader against a real Mosquitto over mutual TLS (acks, persistent session, refusals,
takeover, keepalive), and against a scripted TLS peer for what Mosquitto never sends (a failed
SUBACK, a packet above our Maximum Packet Size, QoS 2)."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.config import BrokerEndpoint, TLSFiles
from relay.ot_source import Delivery, OTSource
from tests.relay.conftest import PRESS_1, RELAY_ID, Plant
from tests.support.mosquitto import Broker, start_broker
from tests.support.mqtt import Endpoint, publish
from tests.support.net import free_port, wait_for

pytestmark = pytest.mark.integration


class Reader:
    """An `OTSource` and everything it reported."""

    def __init__(self, plant: Plant, port: int, client_id: str, keepalive_s: int = 15) -> None:
        cred = plant.cred(RELAY_ID)
        endpoint = BrokerEndpoint(
            "127.0.0.1", port, TLSFiles(plant.pki.cafile, cred.cert, cred.key), keepalive_s
        )
        self.deliveries: list[Delivery] = []
        self.states: list[bool] = []
        self.source = OTSource(
            endpoint, client_id=client_id, subscription="acme/#",
            receive_maximum=100, session_expiry_s=600, max_packet_bytes=64 * 1024,
            on_delivery=self.deliveries.append, on_state=self.states.append,
            reconnect_delay_s=(0.2, 0.5),
        )  # fmt: skip
        self.source.start()

    def ids(self) -> list[str | None]:
        return [d.property_msg_id for d in self.deliveries]


def _broker_conf(plant: Plant, port: int, extra: str = "") -> str:
    return (
        "per_listener_settings false\nallow_anonymous false\nlog_type all\nuser root\n"
        f"persistence false\n{extra}\nlistener {port} 127.0.0.1\n"
        f"cafile {plant.pki.cafile}\ncertfile {plant.server.cert}\nkeyfile {plant.server.key}\n"
        "require_certificate true\nuse_identity_as_username true\n"
    )


@pytest.fixture
def broker(plant: Plant, tmp_path: Path) -> Iterator[Broker]:
    port = free_port()
    b = start_broker(_broker_conf(plant, port), port, tmp_path, name="ot")
    try:
        yield b
    finally:
        b.stop()


def _send(plant: Plant, port: int, msg_id: str) -> None:
    endpoint = Endpoint(port, plant.pki.cafile)
    result = publish(endpoint, plant.cred(PRESS_1), f"{PRESS_1}/telemetry", "{}", v5=True,
                     user_properties=[("idmz-msg-id", msg_id)])  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_only_acknowledged_messages_leave_the_persistent_session(
    plant: Plant, broker: Broker
) -> None:
    first = Reader(plant, broker.port, "ot-acks")
    try:
        wait_for(lambda: first.states == [True], timeout_s=30, what="connected")
        wait_for(lambda: "ot-acks 1 acme/#" in broker.log(), timeout_s=30, what="subscribed")
        for i in range(3):
            _send(plant, broker.port, f"m-{i}")
        wait_for(lambda: len(first.deliveries) == 3, timeout_s=30, what="three deliveries")
        assert first.ids() == ["m-0", "m-1", "m-2"]
        tokens = [d.ack_token for d in first.deliveries]
        assert first.source.ack_many(tokens[:2]) == 2
    finally:
        first.source.stop()
    assert first.states == [True, False]
    assert not first.source.ack(tokens[2]), "an ack for a closed connection must be dropped"
    second = Reader(plant, broker.port, "ot-acks")
    try:
        wait_for(lambda: second.ids() == ["m-2"], timeout_s=30, what="m-2 redelivered")
        assert second.deliveries[0].redelivered
        assert second.source.ack(second.deliveries[0].ack_token)
    finally:
        second.source.stop()
    log = broker.log()
    assert log.count("Received PUBACK from ot-acks") == 3, log


def test_a_refused_connect_is_logged_and_retried(
    plant: Plant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    b = start_broker(_broker_conf(plant, port, "clientid_prefixes plant-"), port, tmp_path)
    caplog.set_level(logging.INFO, logger="relay.ot")
    reader = Reader(plant, port, "idmz-relay-0")
    try:
        wait_for(lambda: caplog.text.count("0x87 not authorized") >= 2, timeout_s=30,
                 what="two refused attempts")  # fmt: skip
        assert reader.states == [] and reader.deliveries == []
    finally:
        reader.source.stop()
        b.stop()


def test_a_connection_the_broker_closes_resumes_its_session(plant: Plant, broker: Broker) -> None:
    reader = Reader(plant, broker.port, "ot-takeover")
    try:
        wait_for(lambda: reader.states == [True], timeout_s=30, what="connected")
        # Another client with our client id: Mosquitto 2.0.11 closes our connection (without
        # a DISCONNECT packet; the scripted peer below sends one).
        cred = plant.cred(RELAY_ID)
        subprocess.run(
            ["mosquitto_sub", *Endpoint(broker.port, plant.pki.cafile).args(cred), "-V",
             "mqttv5", "-i", "ot-takeover", "-t", "x", "-W", "1", "-c", "-x", "600"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        wait_for(lambda: reader.states[-3:] == [True, False, True], timeout_s=30,
                 what="reconnected")  # fmt: skip
        _send(plant, broker.port, "after")
        wait_for(lambda: "after" in reader.ids(), timeout_s=30, what="delivery after takeover")
    finally:
        reader.source.stop()
    assert "Sending CONNACK to ot-takeover (1, 0)" in broker.log()  # session present


def test_an_idle_connection_is_kept_alive_with_pings(plant: Plant, broker: Broker) -> None:
    reader = Reader(plant, broker.port, "ot-idle", keepalive_s=5)
    try:
        # Mosquitto drops a client silent for 1.5 x keepalive (7.5 s); two pings take longer.
        wait_for(lambda: broker.log().count("Received PINGREQ from ot-idle") >= 2,
                 timeout_s=30, what="two PINGREQs")  # fmt: skip
        assert reader.states == [True]
        assert "Sending PINGRESP to ot-idle" in broker.log()
    finally:
        reader.source.stop()


# -- a scripted TLS peer for what Mosquitto never sends ----------------------------------------


def _read_packet(conn: ssl.SSLSocket) -> bytes:
    head = conn.recv(2)
    length, shift, i = head[1] & 0x7F, 7, 1
    while head[i] & 0x80:
        head += conn.recv(1)
        i += 1
        length |= (head[i] & 0x7F) << shift
        shift += 7
    body = b""
    while len(body) < length:
        body += conn.recv(length - len(body))
    return head + body


class ScriptedPeer:
    """Answers CONNECT with a good CONNACK and SUBSCRIBE with ``after_subscribe``; counts
    connections, so a test sees the reader give up on one and open the next."""

    def __init__(self, plant: Plant, after_subscribe: bytes) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(plant.server.cert, plant.server.key)
        ctx.load_verify_locations(plant.pki.cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED
        self._ctx, self._reply = ctx, after_subscribe
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            try:
                with self._ctx.wrap_socket(raw, server_side=True) as conn:
                    assert _read_packet(conn)[0] == 0x10
                    conn.sendall(b"\x20\x03\x00\x00\x00")
                    assert _read_packet(conn)[0] == 0x82
                    conn.sendall(self._reply)
                    while conn.recv(4096):
                        pass
            except (OSError, AssertionError, IndexError):
                continue

    def close(self) -> None:
        self._server.close()


@pytest.mark.parametrize(
    ("reply", "logged"),
    [
        (b"\x90\x04\x00\x01\x00\x87", "did not grant the subscription acme/# at QoS 1: 0x87"),
        (b"\x90\x04\x00\x01\x00\x00", "did not grant the subscription acme/# at QoS 1: 0x00"),
        # SUBACK, then a message announcing 70,000 bytes: above the 65,536 we announced.
        (b"\x90\x04\x00\x01\x00\x01" + b"\x32\xf0\xa2\x04", "the announced maximum is 65536"),
        (b"\x90\x04\x00\x01\x00\x01" + b"\x34\x06\x00\x01a\x00\x01\x00", "at QoS 2"),
        # A DISCONNECT from the server, with a reason string.
        (
            b"\x90\x04\x00\x01\x00\x01" + b"\xe0\x10\x8b\x0e\x1f\x00\x0bmaintenance",
            "disconnected the relay: 0x8B server shutting down (maintenance)",
        ),
    ],
    ids=["suback-refused", "suback-qos0", "packet-too-large", "qos2", "server-disconnect"],
)
def test_what_the_reader_must_not_accept_ends_the_connection(
    plant: Plant, reply: bytes, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.ot")
    peer = ScriptedPeer(plant, reply)
    reader = Reader(plant, peer.port, "ot-scripted")
    try:
        wait_for(lambda: logged in caplog.text and peer.connections >= 2, timeout_s=30,
                 what="the error logged and a new connection")  # fmt: skip
        assert reader.deliveries == []
        assert reader.states[:2] == [True, False]
    finally:
        reader.source.stop()
        peer.close()
