"""The IT side: publish. Nothing else.

`ITSink` publishes QoS 1 messages with MQTT 5 user properties and tells the worker when the IT
broker acknowledged each one. It is a small MQTT 5 writer of our own (ADR 0056) on a
`relay.mqtt_link.Link` (mutual TLS, one thread reading PUBACKs). It has no method that
subscribes, its codec (`relay.it_codec`) has no SUBSCRIBE encoder and no decoder for an
application message, and any application message the IT broker might send is a protocol error
(``tests/relay/test_one_way.py`` checks the source): nothing from the IT side can ever reach
the relay, so nothing can flow from IT toward OT.

The session is persistent when ``session_expiry_s`` > 0 (the worker's: ADR 0081), so that
``on_up(session_present)`` can tell the worker that the broker lost its state; nothing is kept
in it but the fact that it exists. Messages are queued by `publish` and written many per
TLS write: by `flush` (the worker calls it after each OT read and each drain batch) or once
``FLUSH_EVERY_MESSAGES`` are queued. When a connection drops, every message published on it and
not yet acknowledged is handed back to the worker in publish order (``on_down``), which spools
it; nothing is ever resent behind the worker's back.

    sink = ITSink(endpoint, client_id="idmz-relay-0-it", on_acked=queue_ack,
                  on_down=spool_all, on_up=lambda session_present: None)
    sink.start()
    if sink.publish("acme/.../telemetry", payload, [(MSG_ID_PROPERTY, "m-1")], ref):
        sink.flush()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from relay.config import BrokerEndpoint
from relay.errors import MQTTProtocolError
from relay.it_codec import PUBACK, decode_puback, encode_qos1_message, pack_user_properties
from relay.mqtt_codec import Connack, encode_connect
from relay.mqtt_link import Link

_log = logging.getLogger("relay.it")
FLUSH_EVERY_MESSAGES = 32  # bounds what a long OT read holds back before it is written
_INBOUND_MAX_BYTES = 64 * 1024  # we only read CONNACK, PUBACK, PINGRESP and DISCONNECT

__all__ = ["ITSink", "pack_user_properties"]


class ITSink:
    """``on_acked(ref, reason_code)`` (the PUBACK's; >= 0x80 is a refusal), ``on_down(refs)``
    and ``on_up()`` run on the link's thread;
    ``on_acked`` must only queue. `publish` and `flush` may be called from any thread."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        client_id: str,
        on_acked: Callable[[object, int], None],
        on_down: Callable[[Sequence[object]], None],
        on_up: Callable[[bool], None],
        session_expiry_s: int = 0,
        reconnect_delay_s: float = 0.5,
        max_reconnect_delay_s: float = 5.0,
    ) -> None:
        self._on_acked = on_acked
        self._on_down = on_down
        self._on_up = on_up
        self._lock = threading.Lock()  # connection state, queued bytes, packet id -> ref
        self._room = threading.Condition(self._lock)  # a PUBACK freed the broker's window
        self._window_wait_s = float(endpoint.keepalive_s)
        self._up = False
        self._generation = -1
        self._window = 0  # the IT broker's Receive Maximum
        self._next_id = 0
        self._refs: dict[int, object] = {}  # in publish order
        self._progress_at = 0.0  # monotonic: the last PUBACK, or the first publish after none
        self._out: list[bytes] = []
        self._link = Link(
            endpoint,
            side="IT",
            connect_packet=encode_connect(
                client_id,
                clean_start=session_expiry_s == 0,
                keepalive_s=endpoint.keepalive_s,
                session_expiry_s=session_expiry_s,
                receive_maximum=1,  # it never sends us messages; 0 is not allowed
                maximum_packet_size=_INBOUND_MAX_BYTES,
            ),
            max_packet_bytes=_INBOUND_MAX_BYTES,
            handler=self,
            reconnect_delay_s=(reconnect_delay_s, max_reconnect_delay_s),
        )

    @property
    def up(self) -> bool:
        return self._up

    def start(self) -> None:
        self._link.start()

    def stop(self) -> None:
        self._link.stop()

    def publish(
        self, topic: str, payload: bytes, properties: Sequence[tuple[str, str]], ref: object
    ) -> bool:
        """Queue a QoS 1 publish. When the broker's Receive Maximum is reached, waits (up to
        the keepalive) for a PUBACK. False when not connected or still no room: the caller
        spools the message."""
        packed = pack_user_properties(properties)
        with self._lock:
            if self._up and len(self._refs) >= self._window:
                # Back-pressure: the caller (the OT reader, the drainer) waits for a PUBACK, so
                # the OT broker keeps the backlog; only a lost or stuck connection spools.
                self._flush_locked()
                self._room.wait_for(self._has_room_locked, timeout=self._window_wait_s)
            if not self._up or len(self._refs) >= self._window:
                return False
            packet_id = self._next_id
            while True:  # ends: fewer than 65535 ids are in flight
                packet_id = packet_id % 0xFFFF + 1
                if packet_id not in self._refs:
                    break
            self._next_id = packet_id
            if not self._refs:
                self._progress_at = time.monotonic()
            self._out.append(encode_qos1_message(topic, packet_id, packed, payload))
            self._refs[packet_id] = ref
            if len(self._out) >= FLUSH_EVERY_MESSAGES:
                self._flush_locked()
        return True

    def unacked_for_s(self, now: float) -> float:
        """How long messages have been outstanding without any PUBACK (0 when none are): the
        broker is connected but not acknowledging (stopped, overloaded, a dead TCP path)."""
        with self._lock:
            return now - self._progress_at if self._refs else 0.0

    def outstanding(self) -> int:
        return len(self._refs)

    def _has_room_locked(self) -> bool:
        return not self._up or len(self._refs) < self._window

    def flush(self) -> None:
        """Write everything queued, in one TLS write."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            # False means the connection is gone; the link's thread then hands the refs back.
            self._link.send(data, self._generation)

    # -- LinkHandler (the link's thread) ----------------------------------------------------

    def on_connected(self, connack: Connack, generation: int) -> None:
        # First the owner (it may put messages the broker lost back in its spool), then up.
        self._on_up(connack.session_present)
        with self._lock:
            self._generation = generation
            self._window = connack.receive_maximum
            self._up = True
        _log.info("connected to the IT broker (session %s)",
                  "present" if connack.session_present else "new")  # fmt: skip

    def on_packets(self, packets: list[tuple[int, bytes]], generation: int) -> None:
        done: list[tuple[object, int]] = []
        try:
            with self._lock:
                for first, body in packets:
                    if first >> 4 != PUBACK:  # an application message included: never read
                        raise MQTTProtocolError(
                            f"unexpected packet 0x{first:02X} from the IT broker"
                        )
                    packet_id, code = decode_puback(first & 0x0F, body)
                    ref = self._refs.pop(packet_id, None)
                    if ref is None:
                        raise MQTTProtocolError(f"a PUBACK for packet {packet_id}, not in flight")
                    done.append((ref, code))
                if done:
                    self._progress_at = time.monotonic()
                if len(self._refs) + len(done) >= self._window:
                    self._room.notify_all()
        finally:
            for ref, ok in done:
                self._on_acked(ref, ok)

    def on_disconnected(self, was_up: bool) -> None:
        with self._lock:
            self._up = False
            refs = list(self._refs.values())
            self._refs.clear()
            self._out.clear()
            self._room.notify_all()
        if was_up or refs:
            self._on_down(refs)
