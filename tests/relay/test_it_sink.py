"""The IT writer's encoding: provenance user properties byte for byte as paho encodes them,
and a whole QoS 1 message as paho would put it on the wire."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from relay.errors import MQTTProtocolError
from relay.it_codec import decode_puback, encode_qos1_message, pack_user_properties


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("idmz-device", "acme/plant1/stamping/line1/cell1/press-01")],
        [("idmz-msg-id", "x" * 300), ("k", "é✓ ünïcode"), ("", "")],
        [("idmz-policy-sha256", "ab" * 32)] * 40,  # a body over 127 bytes: two-byte length
    ],
)
def test_same_bytes_as_paho(pairs: list[tuple[str, str]]) -> None:
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if pairs:
        reference.UserProperty = list(pairs)
    assert pack_user_properties(pairs) == reference.pack()


def test_refuses_what_mqtt_cannot_carry() -> None:
    with pytest.raises(ValueError, match="65535"):
        pack_user_properties([("k", "v" * 65536)])
    with pytest.raises(UnicodeEncodeError):
        pack_user_properties([("k", "\ud800")])


def test_a_message_is_what_paho_sends_for_the_same_publish() -> None:
    from tests.relay.test_mqtt_codec import paho_encoded_message

    pairs = [("idmz-device", "acme/a"), ("idmz-msg-id", "m-1")]
    reference = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    reference.UserProperty = pairs
    wire = paho_encoded_message(reference, b'{"v":1}' * 30, qos=1)
    topic_end = wire.index(b"acme/a/b") + len("acme/a/b")
    packet_id = int.from_bytes(wire[topic_end : topic_end + 2], "big")
    ours = encode_qos1_message("acme/a/b", packet_id, pack_user_properties(pairs), b'{"v":1}' * 30)
    assert ours == wire


def test_a_puback_gives_its_reason_and_a_malformed_one_is_refused() -> None:
    assert decode_puback(0, b"\x00\x07") == (7, 0)
    assert decode_puback(0, b"\x00\x07\x10") == (7, 0x10)  # no matching subscribers: success
    assert decode_puback(0, b"\x00\x07\x87\x00") == (7, 0x87)
    for flags, body in [(0, b"\x00"), (1, b"\x00\x01"), (0, b"\x00\x00"), (0, b"\x00\x01\x00\x05")]:
        with pytest.raises(MQTTProtocolError):
            decode_puback(flags, body)
