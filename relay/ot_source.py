"""The OT side: subscribe and acknowledge. Nothing else.

`OTSource` is a small MQTT 5 client of our own (ADR 0055) over mutual TLS
(`relay.tls_channel`): one reader thread per source connects, subscribes once to the
subscription it was built for, receives messages and acknowledges those the worker says are
safe. It has no method that publishes, and neither this module nor `relay.mqtt_codec` contains
code that could encode an application message (``tests/relay/test_one_way.py`` checks the
source): the relay cannot send anything toward OT, whatever the rest of the code does.

The session is persistent (Clean Start 0 with a Session Expiry Interval), so messages that
arrive while a worker is down wait in the OT broker. Nothing is acknowledged automatically: a
PUBACK leaves only through `ack`/`ack_many`, which the worker calls after it made the message
safe and audited (ADR 0050). Acks carry the connection generation they were received on; one
for an older connection is dropped (the broker redelivers on the resumed session, and the
dedup window drops the copy).

    source = OTSource(endpoint, client_id="idmz-relay-0", share_group=None,
                      topic_filter="acme/#", receive_maximum=1000, session_expiry_s=604800,
                      max_packet_bytes=1 << 20, on_delivery=handle, on_state=print)
    source.start()   # connects in the background, reconnects (1..5 s backoff) until stop()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from relay.config import BrokerEndpoint
from relay.errors import MQTTProtocolError, OTBrokerUpstreamError, UpstreamError
from relay.mqtt_codec import (
    CONNACK,
    DISCONNECT,
    DISCONNECT_NORMAL,
    MESSAGE,
    PINGREQ,
    PINGRESP,
    SUBACK,
    Framer,
    decode_connack,
    decode_disconnect,
    decode_message,
    decode_suback,
    encode_connect,
    encode_pubacks,
    encode_subscribe,
    reason_name,
)
from relay.tls_channel import TLSChannel, client_context

_log = logging.getLogger("relay.ot")
MSG_ID_PROPERTY = "idmz-msg-id"
_MSG_ID_KEY = MSG_ID_PROPERTY.encode()
CONNECT_TIMEOUT_S = 10.0
_SUBSCRIBE_ID = 1
AckToken = tuple[int, int, int]  # (connection generation, packet id, qos)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message from the OT broker. ``ack_token`` is only meaningful to `OTSource.ack`."""

    topic: str
    payload: bytes
    property_msg_id: str | None
    redelivered: bool
    ack_token: AckToken


class _SessionEndedError(Exception):
    """The reader's own signal that the connection is over (stop, or the broker closed it)."""


class OTSource:
    """``on_delivery`` and ``on_state`` run on the reader thread; ``ack``/``ack_many`` may be
    called from any thread."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        client_id: str,
        share_group: str | None,
        topic_filter: str,
        receive_maximum: int,
        session_expiry_s: int,
        max_packet_bytes: int,
        on_delivery: Callable[[Delivery], None],
        on_state: Callable[[bool], None],
        reconnect_delay_s: tuple[float, float] = (1.0, 5.0),
    ) -> None:
        self._endpoint = endpoint
        # One worker: a plain persistent subscription (Mosquitto 2.0.11 restores it from
        # persistence after a broker restart and keeps strict order). Several workers: an
        # MQTT 5 shared subscription (ADR 0052 explains what 2.0.11 loses across a restart).
        self._subscription = (
            topic_filter if share_group is None else f"$share/{share_group}/{topic_filter}"
        )
        self._connect_packet = encode_connect(
            client_id,
            keepalive_s=endpoint.keepalive_s,
            session_expiry_s=session_expiry_s,
            receive_maximum=receive_maximum,
            maximum_packet_size=max_packet_bytes,
        )
        self._max_packet_bytes = max_packet_bytes
        self._context = client_context(endpoint)
        self._on_delivery = on_delivery
        self._on_state = on_state
        self._delay = reconnect_delay_s
        self._lock = threading.Lock()  # _channel, _generation, _last_send_at; held to send
        self._channel: TLSChannel | None = None
        self._generation = 0
        self._last_send_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ot-reader", daemon=True)

    def start(self) -> None:
        """Connect in the background; reconnects forever until `stop`."""
        self._thread.start()

    def stop(self) -> None:
        """Send DISCONNECT (the session and its queue stay on the broker) and end the reader."""
        self._stop.set()
        with self._lock:
            channel = self._channel
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.send(DISCONNECT_NORMAL)
                channel.shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout=CONNECT_TIMEOUT_S + 5)

    def ack(self, token: AckToken) -> bool:
        """Acknowledge a delivery. False when its connection is gone: the OT broker will
        deliver the message again on the resumed session (and the dedup window drops it)."""
        return self.ack_many((token,)) == 1

    def ack_many(self, tokens: Iterable[AckToken]) -> int:
        """Acknowledge deliveries with one socket write; returns how many were acknowledged
        (QoS 0 ones need no PUBACK and count). Those of an older connection are dropped."""
        generation, count, packet_ids = self._generation, 0, []
        for gen, packet_id, qos in tokens:
            if gen == generation:
                count += 1
                if qos:
                    packet_ids.append(packet_id)
        if not packet_ids:
            return count
        data = encode_pubacks(packet_ids)
        with self._lock:
            if self._generation != generation or self._channel is None:
                return 0
            return count if self._send_locked(data) else 0

    def _send_locked(self, data: bytes) -> bool:
        assert self._channel is not None
        try:
            self._channel.send(data)
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            _log.warning("cannot write to the OT broker (%s); dropping the connection", exc)
            self._channel.shutdown()  # the reader sees it and reconnects
            return False
        self._last_send_at = time.monotonic()
        return True

    # -- the reader thread ------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._delay[0]
        while not self._stop.is_set():
            if self._session():
                delay = self._delay[0]
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self._delay[1])

    def _session(self) -> bool:
        """One connection from TCP connect to its end. True if the subscription was granted."""
        where = f"{self._endpoint.host}:{self._endpoint.port}"
        try:
            channel = TLSChannel.connect(
                self._context, self._endpoint.host, self._endpoint.port,
                timeout_s=CONNECT_TIMEOUT_S,
            )  # fmt: skip
        except OSError as exc:
            _log.warning("cannot connect to the OT broker %s: %s", where, exc)
            return False
        state = _Session(channel, Framer(max_packet_bytes=self._max_packet_bytes))
        try:
            self._converse(state)
        except _SessionEndedError as exc:
            if not self._stop.is_set():
                _log.warning("lost the OT broker %s (%s); reconnecting", where, exc)
        except MQTTProtocolError as exc:
            _log.error("protocol error from the OT broker %s: %s; reconnecting", where, exc)
        except UpstreamError as exc:
            _log.error("%s; reconnecting", exc)
        except OSError as exc:
            if not self._stop.is_set():
                _log.warning("lost the OT broker %s (%s); reconnecting", where, exc)
        except Exception:  # noqa: BLE001 - a delivery callback failed: redeliver, never lose
            _log.exception("OT delivery failed; reconnecting so the broker redelivers")
        finally:
            with self._lock:
                self._generation += 1
                self._channel = None
            channel.shutdown()
            channel.close()
            if state.up:
                self._on_state(False)
        return state.subscribed

    def _converse(self, s: _Session) -> None:
        s.channel.send(self._connect_packet)
        packets = self._read(s)
        first, body = packets[0]
        if first >> 4 != CONNACK:
            raise MQTTProtocolError(f"expected CONNACK, received packet type {first >> 4}")
        connack = decode_connack(first & 0x0F, body)
        if connack.reason_code >= 0x80:
            raise OTBrokerUpstreamError(
                f"the OT broker refused the relay's CONNECT: {reason_name(connack.reason_code)}"
                + (f" ({connack.reason_string})" if connack.reason_string else "")
            )
        keepalive = self._endpoint.keepalive_s
        if connack.server_keepalive_s is not None:  # §3.2.2.3.14: the server's value wins
            keepalive = connack.server_keepalive_s
        s.channel.settimeout(keepalive / 2 if keepalive else 60.0)
        with self._lock:
            self._generation += 1
            self._channel = s.channel
            self._send_locked(encode_subscribe(_SUBSCRIBE_ID, self._subscription))
        s.generation = self._generation
        _log.info(
            "connected to the OT broker (session %s); subscribing to %s",
            "resumed" if connack.session_present else "new",
            self._subscription,
        )
        s.up = True
        self._on_state(True)
        self._dispatch(s, packets[1:])
        while True:
            self._dispatch(s, self._read(s))
            now = time.monotonic()
            if s.ping_sent_at and now - s.ping_sent_at > max(keepalive, 1):
                raise _SessionEndedError(f"no PINGRESP within {keepalive} s")
            if keepalive and not s.ping_sent_at and now - self._last_send_at >= keepalive / 2:
                with self._lock:
                    self._send_locked(PINGREQ)
                s.ping_sent_at = now

    def _read(self, s: _Session) -> list[tuple[int, bytes]]:
        """The complete packets of one socket read (none after an idle receive timeout); before
        CONNACK, reads until there is at least one."""
        while True:
            try:
                data = s.channel.recv()
            except TimeoutError:
                if s.up:
                    return []
                raise _SessionEndedError("no CONNACK within the connect timeout") from None
            if not data:
                raise _SessionEndedError("stopped" if self._stop.is_set() else "connection closed")
            packets = s.framer.feed(data)
            if packets or s.up:
                return packets

    def _dispatch(self, s: _Session, packets: list[tuple[int, bytes]]) -> None:
        deliver, generation = self._on_delivery, s.generation
        for first, body in packets:
            kind = first >> 4
            if kind == MESSAGE:
                topic, packet_id, qos, msg_id, payload = decode_message(
                    first & 0x0F, body, _MSG_ID_KEY
                )
                try:
                    name = topic.decode("utf-8")
                except UnicodeDecodeError:  # kept, so the inspector refuses and audits it
                    name = topic.decode("utf-8", "surrogateescape")
                deliver(
                    Delivery(
                        name, payload, msg_id, bool(first & 0x08), (generation, packet_id, qos)
                    )
                )
            elif first == PINGRESP << 4 and not body:
                s.ping_sent_at = 0.0
            elif kind == SUBACK:
                self._check_suback(s, first & 0x0F, body)
            elif kind == DISCONNECT:
                code, reason = decode_disconnect(first & 0x0F, body)
                raise OTBrokerUpstreamError(
                    f"the OT broker disconnected the relay: {reason_name(code)}"
                    + (f" ({reason})" if reason else "")
                )
            else:
                raise MQTTProtocolError(f"unexpected packet 0x{first:02X} from the broker")

    def _check_suback(self, s: _Session, flags: int, body: bytes) -> None:
        packet_id, codes = decode_suback(flags, body)
        if packet_id != _SUBSCRIBE_ID or s.subscribed:
            raise MQTTProtocolError(f"a SUBACK for packet {packet_id}, which we did not send")
        if codes[0] != 0x01:  # below QoS 1 the broker would not hold messages for us
            raise OTBrokerUpstreamError(
                f"the OT broker did not grant the subscription {self._subscription} at QoS 1: "
                f"{reason_name(codes[0])}"
            )
        s.subscribed = True
        _log.info("subscribed to %s", self._subscription)


class _Session:
    """What the reader knows about its current connection."""

    __slots__ = ("channel", "framer", "generation", "ping_sent_at", "subscribed", "up")

    def __init__(self, channel: TLSChannel, framer: Framer) -> None:
        self.channel, self.framer = channel, framer
        self.generation = 0
        self.ping_sent_at = 0.0
        self.subscribed = self.up = False
