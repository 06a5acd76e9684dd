"""The MQTT 5 wire format the OT reader needs, and nothing more (OASIS MQTT Version 5.0).

A subscriber that never sends application messages needs to *encode* only CONNECT, SUBSCRIBE,
PUBACK, PINGREQ and DISCONNECT, and to *decode* CONNACK, SUBACK, application messages
(packet type 3), PINGRESP and DISCONNECT. There is deliberately no encoder for packet type 3
here: the OT side of the relay cannot send data toward OT because no code exists to do it
(``tests/relay/test_one_way.py`` checks this module's source).

Every decoder is strict and total: for any input it returns a value or raises
`MQTTProtocolError`; nothing else escapes, and it never loops on its input (hypothesis fuzzes
this in ``tests/relay/test_mqtt_codec.py``).

    >>> framer = Framer(max_packet_bytes=1024)
    >>> [(first, body) for first, body in framer.feed(b"\\xd0\\x00\\x20\\x03\\x00\\x00\\x00")]
    [(208, b''), (32, b'\\x00\\x00\\x00')]
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from relay.errors import MQTTProtocolError

# Fixed header first bytes (type << 4 | flags), §2.1.2.
CONNECT, CONNACK, MESSAGE, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
PINGREQ_TYPE, PINGRESP, DISCONNECT = 12, 13, 14
PINGREQ = b"\xc0\x00"
DISCONNECT_NORMAL = b"\xe0\x00"  # reason 0x00 (§3.14.2.1), session kept per its expiry

USER_PROPERTY = 0x26
SESSION_EXPIRY, RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE = 0x11, 0x21, 0x27
SERVER_KEEP_ALIVE, REASON_STRING, TOPIC_ALIAS = 0x13, 0x1F, 0x23
MAX_VARIABLE_BYTE_INTEGER = 268_435_455  # §1.5.5

# Property identifier -> how its value is encoded (§2.2.2.2). 1/2/4: fixed-size integers,
# "v": Variable Byte Integer, "s": UTF-8 string, "b": binary data, "p": UTF-8 string pair.
PROPERTY_TYPES: dict[int, int | str] = {
    0x01: 1, 0x02: 4, 0x03: "s", 0x08: "s", 0x09: "b", 0x0B: "v", 0x11: 4, 0x12: "s",
    0x13: 2, 0x15: "s", 0x16: "b", 0x17: 1, 0x18: 4, 0x19: 1, 0x1A: "s", 0x1C: "s",
    0x1F: "s", 0x21: 2, 0x22: 2, 0x23: 2, 0x24: 1, 0x25: 1, 0x26: "p", 0x27: 4, 0x28: 1,
    0x29: 1, 0x2A: 1,
}  # fmt: skip

REASON_NAMES = {
    0x00: "success", 0x01: "granted QoS 1", 0x02: "granted QoS 2", 0x04: "disconnect with will",
    0x80: "unspecified error", 0x81: "malformed packet", 0x82: "protocol error",
    0x83: "implementation specific error", 0x84: "unsupported protocol version",
    0x85: "client identifier not valid", 0x86: "bad user name or password",
    0x87: "not authorized", 0x88: "server unavailable", 0x89: "server busy", 0x8A: "banned",
    0x8B: "server shutting down", 0x8C: "bad authentication method", 0x8D: "keep alive timeout",
    0x8E: "session taken over", 0x8F: "topic filter invalid", 0x90: "topic name invalid",
    0x91: "packet identifier in use", 0x93: "receive maximum exceeded",
    0x95: "packet too large", 0x97: "quota exceeded", 0x9C: "use another server",
    0x9D: "server moved", 0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded", 0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}  # fmt: skip


def reason_name(code: int) -> str:
    return f"0x{code:02X} {REASON_NAMES.get(code, 'unknown reason')}"


# -- encoders (client -> server) -------------------------------------------------------------


def variable_byte_integer(n: int) -> bytes:
    """§1.5.5: seven bits per byte, least significant first, high bit = more follows."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise MQTTProtocolError(f"an MQTT string is at most 65535 bytes; found {len(raw)}")
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + variable_byte_integer(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    clean_start: bool,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int,
    maximum_packet_size: int,
) -> bytes:
    """CONNECT (§3.1): protocol level 5, no will, no user name or password (the client
    certificate is the identity)."""
    props = (
        bytes((SESSION_EXPIRY,)) + struct.pack("!I", session_expiry_s)
        + bytes((RECEIVE_MAXIMUM,)) + struct.pack("!H", receive_maximum)
        + bytes((MAXIMUM_PACKET_SIZE,)) + struct.pack("!I", maximum_packet_size)
    )  # fmt: skip
    body = (
        _utf8("MQTT") + b"\x05" + (b"\x02" if clean_start else b"\x00")
        + struct.pack("!H", keepalive_s)
        + variable_byte_integer(len(props)) + props + _utf8(client_id)
    )  # fmt: skip
    return _packet(CONNECT << 4, body)


class RetainHandling(IntEnum):
    """Subscription option bits 4-5 (§3.8.3.1): whether the broker sends its retained messages
    when the subscription is made."""

    SEND_ON_SUBSCRIBE = 0
    SEND_IF_NEW_SUBSCRIPTION = 1
    DO_NOT_SEND = 2


def encode_subscribe(
    packet_id: int,
    topic_filter: str,
    *more_filters: str,
    retain_handling: RetainHandling = RetainHandling.SEND_ON_SUBSCRIBE,
) -> bytes:
    """SUBSCRIBE (§3.8) to one or more filters at QoS 1 with ``retain_handling``; no local and
    retain-as-published left at 0. Flags 0b0010 are mandatory (§2.1.3)."""
    options = bytes((0x01 | retain_handling << 4,))
    pairs = b"".join(_utf8(f) + options for f in (topic_filter, *more_filters))
    body = struct.pack("!H", packet_id) + b"\x00" + pairs
    return _packet(SUBSCRIBE << 4 | 0x02, body)


_PUBACK_HEAD = bytes((PUBACK << 4, 2))


def encode_pubacks(packet_ids: Iterable[int]) -> bytes:
    """One PUBACK (§3.4, reason 0x00 omitted, §3.4.2.1) per packet id, concatenated."""
    head = _PUBACK_HEAD
    return b"".join([head + pid.to_bytes(2, "big") for pid in packet_ids])


# -- framing ---------------------------------------------------------------------------------


class Framer:
    """Splits a byte stream into packets by the fixed header's Remaining Length (§2.1.4) and
    keeps the incomplete tail for the next `feed`. A packet larger than ``max_packet_bytes``
    (the Maximum Packet Size we announced, which counts the whole packet) is a protocol error
    before its body is read."""

    def __init__(self, *, max_packet_bytes: int) -> None:
        self.max_packet_bytes = max_packet_bytes
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        size, limit, pos = len(buf), self.max_packet_bytes, 0
        out: list[tuple[int, bytes]] = []
        while size - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            head = 2
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if pos + head >= size:
                        self._buf = buf[pos:]
                        return out
                    digit = buf[pos + head]
                    head += 1
                    length |= (digit & 0x7F) << shift
                    if not digit & 0x80:
                        break
                    shift += 7
                    if head == 5:
                        raise MQTTProtocolError("a Remaining Length longer than 4 bytes")
            end = pos + head + length
            if end - pos > limit:
                raise MQTTProtocolError(
                    f"a packet of {end - pos} bytes; the announced maximum is {limit}"
                )
            if end > size:
                break
            out.append((first, buf[pos + head : end]))
            pos = end
        self._buf = buf[pos:]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


# -- decoders (server -> client) -------------------------------------------------------------


def _read_vbi(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    for i in range(4):
        digit = buf[pos + i]
        value |= (digit & 0x7F) << shift
        if not digit & 0x80:
            return value, pos + i + 1
        shift += 7
    raise MQTTProtocolError("a Variable Byte Integer longer than 4 bytes")


def _read_string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    n = (buf[pos] << 8) | buf[pos + 1]
    stop = pos + 2 + n
    if stop > end:
        raise MQTTProtocolError("a string runs past its packet")
    return buf[pos + 2 : stop].decode("utf-8"), stop


def _skip_property(buf: bytes, pos: int, end: int, ident: int) -> int:
    kind = PROPERTY_TYPES.get(ident)
    if kind is None:
        raise MQTTProtocolError(f"unknown property identifier 0x{ident:02X}")
    if isinstance(kind, int):
        return pos + kind
    if kind == "v":
        return _read_vbi(buf, pos)[1]
    if kind == "p":
        pos = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        if pos + 2 > end:
            raise MQTTProtocolError("a string pair runs past its properties")
    return pos + 2 + ((buf[pos] << 8) | buf[pos + 1])


def read_properties(buf: bytes, pos: int, wanted: frozenset[int]) -> tuple[dict[int, object], int]:
    """The property block at ``pos`` (§2.2.2): the values of the ``wanted`` single-valued
    properties, every other property skipped by its type; returns (values, end of block)."""
    length, pos = _read_vbi(buf, pos)
    end = pos + length
    if end > len(buf):
        raise MQTTProtocolError("properties run past their packet")
    values: dict[int, object] = {}
    while pos < end:
        ident = buf[pos]
        pos += 1
        if ident in wanted:
            kind = PROPERTY_TYPES[ident]
            if kind == "s":
                values[ident], pos = _read_string(buf, pos, end)
            elif isinstance(kind, int):
                values[ident] = int.from_bytes(buf[pos : pos + kind], "big")
                pos += kind
        else:
            pos = _skip_property(buf, pos, end, ident)
        if pos > end:
            raise MQTTProtocolError("a property runs past its properties")
    return values, end


def decode_message(
    flags: int, body: bytes, key: bytes
) -> tuple[bytes, int, int, str | None, bytes]:
    """An application message, packet type 3 (§3.3): (topic bytes, packet id (0 at QoS 0),
    QoS, the value of the first user property named ``key`` or None, payload). Every other
    property is skipped by its type. QoS 2 is a protocol error: we subscribe at QoS 1, so the
    server must not send it (§3.8.3.1). A Topic Alias is one too: we announce no Topic Alias
    Maximum, so the server may not use one (§3.2.2.3.8)."""
    qos = (flags >> 1) & 3
    if qos > 1:
        raise MQTTProtocolError(f"a message at QoS {qos}; the subscription is QoS 1")
    try:
        n = (body[0] << 8) | body[1]
        pos = 2 + n
        topic = body[2:pos]
        if not n or len(topic) != n:
            raise MQTTProtocolError("a message without a complete topic name")
        packet_id = 0
        if qos:
            packet_id = (body[pos] << 8) | body[pos + 1]
            pos += 2
            if not packet_id:
                raise MQTTProtocolError("a QoS 1 message with packet identifier 0")
        length = body[pos]
        if length < 0x80:
            pos += 1
        else:
            length, pos = _read_vbi(body, pos)
        end = pos + length
        if end > len(body):
            raise MQTTProtocolError("message properties run past the packet")
        value: str | None = None
        while pos < end:
            ident = body[pos]
            pos += 1
            if ident == USER_PROPERTY:
                k_start = pos + 2
                pos = k_start + ((body[pos] << 8) | body[pos + 1])
                v_start = pos + 2
                pos = v_start + ((body[pos] << 8) | body[pos + 1])
                if pos > end:
                    raise MQTTProtocolError("a user property runs past the properties")
                if value is None and body[k_start : v_start - 2] == key:
                    value = body[v_start:pos].decode("utf-8")
            elif ident == TOPIC_ALIAS:
                raise MQTTProtocolError("a Topic Alias, which we never allowed")
            else:
                pos = _skip_property(body, pos, end, ident)
                if pos > end:
                    raise MQTTProtocolError("a property runs past the properties")
    except (IndexError, UnicodeDecodeError) as exc:
        raise MQTTProtocolError(f"malformed message: {exc}") from exc
    return topic, packet_id, qos, value, body[end:]


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason_code: int
    server_keepalive_s: int | None
    reason_string: str | None
    receive_maximum: int  # QoS 1 messages the server takes unacknowledged from us (§3.2.2.3.3)


_CONNACK_WANTED = frozenset({SERVER_KEEP_ALIVE, REASON_STRING, RECEIVE_MAXIMUM})


def decode_connack(flags: int, body: bytes) -> Connack:
    """CONNACK (§3.2)."""
    try:
        if flags or body[0] & 0xFE:
            raise MQTTProtocolError("CONNACK with reserved bits set")
        props, end = read_properties(body, 2, _CONNACK_WANTED)
    except (IndexError, UnicodeDecodeError) as exc:
        raise MQTTProtocolError(f"malformed CONNACK: {exc}") from exc
    if end != len(body):
        raise MQTTProtocolError("CONNACK longer than its contents")
    keepalive = props.get(SERVER_KEEP_ALIVE)
    reason = props.get(REASON_STRING)
    receive_maximum = props.get(RECEIVE_MAXIMUM, 65535)
    if not receive_maximum or not isinstance(receive_maximum, int):
        raise MQTTProtocolError("a CONNACK with Receive Maximum 0")
    return Connack(
        bool(body[0] & 1),
        body[1],
        keepalive if isinstance(keepalive, int) else None,
        reason if isinstance(reason, str) else None,
        receive_maximum,
    )


def decode_suback(flags: int, body: bytes) -> tuple[int, bytes]:
    """SUBACK (§3.9): (packet id, one reason code per filter)."""
    try:
        if flags:
            raise MQTTProtocolError("SUBACK with reserved flags set")
        packet_id = (body[0] << 8) | body[1]
        _, end = read_properties(body, 2, frozenset())
    except (IndexError, UnicodeDecodeError) as exc:
        raise MQTTProtocolError(f"malformed SUBACK: {exc}") from exc
    codes = body[end:]
    if not codes:
        raise MQTTProtocolError("SUBACK without a reason code")
    return packet_id, codes


def decode_disconnect(flags: int, body: bytes) -> tuple[int, str | None]:
    """DISCONNECT from the server (§3.14): (reason code, reason string)."""
    if flags:
        raise MQTTProtocolError("DISCONNECT with reserved flags set")
    if not body:
        return 0, None
    if len(body) == 1:
        return body[0], None
    try:
        props, end = read_properties(body, 1, frozenset({REASON_STRING}))
    except (IndexError, UnicodeDecodeError) as exc:
        raise MQTTProtocolError(f"malformed DISCONNECT: {exc}") from exc
    if end != len(body):
        raise MQTTProtocolError("DISCONNECT longer than its contents")
    reason = props.get(REASON_STRING)
    return body[0], reason if isinstance(reason, str) else None
