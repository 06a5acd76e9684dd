"""The MQTT 5 packets the IT writer sends and the one it reads back (OASIS MQTT Version 5.0).

Encoders for QoS 1 application messages (packet type 3) with user properties; a decoder for
PUBACK. There is deliberately no SUBSCRIBE encoder and no application message decoder here:
nothing from the IT side can reach the relay (``tests/relay/test_one_way.py`` checks this
module's source). CONNECT, CONNACK, keepalive and DISCONNECT come from `relay.mqtt_codec`.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.sparkplug import BIRTH_CACHE_PREFIX
from relay.errors import MQTTProtocolError
from relay.mqtt_codec import read_properties, variable_byte_integer

PUBACK = 4
_USER_PROPERTY = b"\x26"  # property identifier 38: a UTF-8 string pair (§3.3.2.3.7)
_QOS1_MESSAGE = b"\x32"  # packet type 3, QoS 1, not DUP, not RETAIN (§3.3.1)
_QOS1_RETAINED = b"\x33"  # the same, RETAIN: only the Sparkplug birth cache (ADR 0110)


def pack_user_properties(pairs: Sequence[tuple[str, str]]) -> bytes:
    """The property block (length + properties) holding only user properties: byte for byte
    what paho's generic `Properties.pack` produces (tests/relay/test_it_sink.py)."""
    parts: list[bytes] = []
    for key, value in pairs:
        raw_key = key.encode("utf-8")  # strict: a lone surrogate is an error, as in paho
        raw_value = value.encode("utf-8")
        if len(raw_key) > 0xFFFF or len(raw_value) > 0xFFFF:
            raise ValueError("an MQTT user property string is longer than 65535 bytes")
        parts += (
            _USER_PROPERTY,
            len(raw_key).to_bytes(2, "big"),
            raw_key,
            len(raw_value).to_bytes(2, "big"),
            raw_value,
        )
    body = b"".join(parts)
    return variable_byte_integer(len(body)) + body


def encode_qos1_message(topic: str, packet_id: int, properties: bytes, payload: bytes) -> bytes:
    """A QoS 1 application message (§3.3); ``properties`` from `pack_user_properties`. Only
    the Sparkplug birth cache (``$sparkplug/certificates/...``) is retained, by its topic: a
    copy the relay made of a birth it forwarded, so nothing else can ask for retention."""
    name = topic.encode("utf-8")
    if len(name) > 0xFFFF:
        raise ValueError("an MQTT topic is at most 65535 bytes")
    length = 4 + len(name) + len(properties) + len(payload)
    return b"".join(
        (
            _QOS1_RETAINED if topic.startswith(BIRTH_CACHE_PREFIX) else _QOS1_MESSAGE,
            variable_byte_integer(length),
            len(name).to_bytes(2, "big"),
            name,
            packet_id.to_bytes(2, "big"),
            properties,
            payload,
        )
    )


def decode_puback(flags: int, body: bytes) -> tuple[int, int]:
    """PUBACK (§3.4): (packet id, reason code; 0x00 when omitted, §3.4.2.1)."""
    if flags or len(body) < 2:
        raise MQTTProtocolError("a malformed PUBACK")
    packet_id = (body[0] << 8) | body[1]
    if not packet_id:
        raise MQTTProtocolError("a PUBACK for packet identifier 0")
    if len(body) > 3:
        try:
            _, end = read_properties(body, 3, frozenset())
        except (IndexError, UnicodeDecodeError) as exc:
            raise MQTTProtocolError(f"malformed PUBACK properties: {exc}") from exc
        if end != len(body):
            raise MQTTProtocolError("a PUBACK longer than its contents")
    return packet_id, body[2] if len(body) > 2 else 0
