"""The OT reader's MQTT 5 codec against real encoders and decoders: packets paho encodes,
packets Mosquitto sends, and our CONNECT/SUBSCRIBE/PUBACK as Mosquitto reads them. Hypothesis
shows the decoders are total: any bytes give a value or `MQTTProtocolError`, nothing else."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from relay.errors import MQTTProtocolError
from relay.mqtt_codec import (
    Framer,
    decode_connack,
    decode_disconnect,
    decode_message,
    decode_suback,
    encode_connect,
    encode_pubacks,
    encode_subscribe,
)
from tests.support.mosquitto import start_broker
from tests.support.net import free_port

KEY = b"idmz-msg-id"


def _packets(data: bytes, limit: int = 1 << 20) -> list[tuple[int, bytes]]:
    return Framer(max_packet_bytes=limit).feed(data)


def _read_packet(sock: socket.socket) -> bytes:
    """One whole packet, framed independently of the code under test."""
    head = sock.recv(1, socket.MSG_WAITALL)
    length, shift, raw = 0, 0, b""
    while True:
        b = sock.recv(1, socket.MSG_WAITALL)
        raw += b
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    body = sock.recv(length, socket.MSG_WAITALL) if length else b""
    return head + raw + body


def paho_encoded_message(props: Properties, payload: bytes, qos: int) -> bytes:
    """The bytes paho's own encoder puts on the wire for one publish, read by a plain TCP
    listener that answers CONNECT with a hand-written CONNACK."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    out: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            _read_packet(conn)  # CONNECT
            conn.sendall(b"\x20\x03\x00\x00\x00")
            out.append(_read_packet(conn))

    t = threading.Thread(target=serve)
    t.start()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-enc", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.publish("acme/a/b", payload, qos=qos, properties=props)
    client.connect("127.0.0.1", port)
    client.loop_start()
    t.join(timeout=30)
    client.loop_stop()
    server.close()
    return out[0]


def test_decodes_a_message_paho_encoded_with_every_kind_of_property() -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 3600
    props.ContentType = "application/json"
    props.ResponseTopic = "x/y"
    props.CorrelationData = b"\x00\x01corr"
    props.UserProperty = [("other", "v"), ("idmz-msg-id", "m-42"), ("idmz-msg-id", "second")]
    raw = paho_encoded_message(props, b'{"a":1}', qos=1)
    [(first, body)] = _packets(raw)
    topic, packet_id, qos, msg_id, payload = decode_message(first & 0x0F, body, KEY)
    assert (topic, qos, msg_id, payload) == (b"acme/a/b", 1, "m-42", b'{"a":1}')
    assert packet_id > 0


def test_decodes_a_qos0_message_without_properties() -> None:
    raw = paho_encoded_message(Properties(PacketTypes.PUBLISH), b"", qos=0)
    [(first, body)] = _packets(raw)
    assert decode_message(first & 0x0F, body, KEY) == (b"acme/a/b", 0, 0, None, b"")


def test_mosquitto_reads_our_packets_and_we_read_its(tmp_path: Path) -> None:
    port = free_port()
    conf = f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_keepalive 30\n"
    broker = start_broker(conf, port, tmp_path, name="plain")
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(encode_connect("codec-test", clean_start=False, keepalive_s=60, session_expiry_s=300,
                                    receive_maximum=5, maximum_packet_size=4096))  # fmt: skip
        [(first, body)] = _packets(_read_packet(sock))
        connack = decode_connack(first & 0x0F, body)
        assert (connack.reason_code, connack.session_present) == (0, False)
        assert connack.server_keepalive_s == 30  # max_keepalive lowers our 60
        sock.sendall(encode_subscribe(7, "acme/#"))
        [(first, body)] = _packets(_read_packet(sock))
        assert decode_suback(first & 0x0F, body) == (7, b"\x01")
        result = subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1",
             "-t", "acme/p/telemetry", "-m", "hello", "-D", "publish", "user-property",
             "idmz-msg-id", "id-1", "-D", "publish", "content-type", "text/plain"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        [(first, body)] = _packets(_read_packet(sock))
        topic, packet_id, qos, msg_id, payload = decode_message(first & 0x0F, body, KEY)
        assert (topic, qos, msg_id, payload) == (b"acme/p/telemetry", 1, "id-1", b"hello")
        sock.sendall(encode_pubacks([packet_id]) + b"\xe0\x00")
        sock.close()
    finally:
        broker.stop()


def test_framer_keeps_the_incomplete_tail_across_reads() -> None:
    stream = b"\xd0\x00" + b"\x20\x03\x00\x00\x00" + b"\x90\x04\x00\x01\x00\x01"
    framer = Framer(max_packet_bytes=100)
    out = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
    assert [first for first, _ in out] == [0xD0, 0x20, 0x90]
    assert framer.buffered == 0


def test_a_packet_larger_than_announced_is_refused_before_its_body_arrives() -> None:
    framer = Framer(max_packet_bytes=1000)
    with pytest.raises(MQTTProtocolError, match="announced maximum is 1000"):
        framer.feed(b"\x32\xe8\x07")  # remaining length 1000: 1003 bytes in all


def test_qos2_and_topic_aliases_are_protocol_errors() -> None:
    body = b"\x00\x01a\x00\x01\x00"
    with pytest.raises(MQTTProtocolError, match="QoS 2"):
        decode_message(0x04, body, KEY)
    with pytest.raises(MQTTProtocolError, match="Topic Alias"):
        decode_message(0x02, b"\x00\x01a\x00\x01\x03\x23\x00\x01", KEY)


@pytest.mark.parametrize(
    "props",
    [
        b"\x02\x26\x00",  # a user property cut short
        b"\x01\x7f",  # an unknown property identifier
        b"\x03\x02\x00\x00",  # a 4-byte integer property overrunning its block
        b"\x12\x26\x00\x0bidmz-msg-id\x00\x02\xff\xfe",  # the message id is not UTF-8
    ],
)
def test_a_malformed_property_block_is_a_protocol_error(props: bytes) -> None:
    with pytest.raises(MQTTProtocolError):
        decode_message(0x02, b"\x00\x01a\x00\x01" + props, KEY)


def test_encoders_never_produce_an_application_message() -> None:
    packets = [
        encode_connect("c", clean_start=True, keepalive_s=5, session_expiry_s=1, receive_maximum=1,
                       maximum_packet_size=100),
        encode_subscribe(1, "a/#"),
        encode_pubacks([1, 2, 65535]),
    ]  # fmt: skip
    for raw in packets:
        for first, _ in _packets(raw):
            assert first >> 4 in {1, 4, 8}


def test_pubacks_of_a_batch_are_one_buffer() -> None:
    raw = encode_pubacks([1, 258])
    assert raw == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert struct.unpack("!H", raw[6:])[0] == 258


def _decode_any(first: int, body: bytes) -> None:
    kind, flags = first >> 4, first & 0x0F
    if kind == 3:
        decode_message(flags, body, KEY)
    elif kind == 2:
        decode_connack(flags, body)
    elif kind == 9:
        decode_suback(flags, body)
    elif kind == 14:
        decode_disconnect(flags, body)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(1, 40), max_size=8))
def test_arbitrary_bytes_only_ever_raise_the_protocol_error(data: bytes, cuts: list[int]) -> None:
    framer = Framer(max_packet_bytes=200)
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            for first, body in framer.feed(data[pos : pos + cut]):
                for kind in (2, 3, 9, 14):  # every decoder sees every body
                    with contextlib.suppress(MQTTProtocolError):
                        _decode_any(kind << 4 | (first & 0x0F), body)
            pos += cut
    except MQTTProtocolError:
        pass


@settings(max_examples=2000, deadline=None)
@given(
    st.binary(min_size=1, max_size=40),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=4),
    st.binary(max_size=40),
    st.integers(0, 200),
    st.integers(0, 255),
)
def test_mutated_messages_only_ever_raise_the_protocol_error(
    topic: bytes, pairs: list[tuple[str, str]], payload: bytes, where: int, value: int
) -> None:
    props = b"".join(
        b"\x26" + struct.pack("!H", len(k.encode())) + k.encode()
        + struct.pack("!H", len(v.encode())) + v.encode()
        for k, v in pairs
    )  # fmt: skip
    plen = (
        bytes([len(props)])
        if len(props) < 128
        else bytes([len(props) & 0x7F | 0x80, len(props) >> 7])
    )
    body = bytearray(struct.pack("!H", len(topic)) + topic + b"\x00\x01" + plen + props + payload)
    decoded = decode_message(0x02, bytes(body), KEY)
    assert decoded[0] == topic and decoded[4] == payload
    body[where % len(body)] = value
    with contextlib.suppress(MQTTProtocolError):
        decode_message(0x02, bytes(body), KEY)
