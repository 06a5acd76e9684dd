"""The OT side: subscribe and acknowledge. Nothing else.

`OTSource` is a small MQTT 5 client of our own (ADR 0055) on a `relay.mqtt_link.Link`
(mutual TLS, one thread per source): it connects, subscribes once to the subscription it was
built for, receives messages and acknowledges those the worker says are safe. It has no method that publishes, and neither this module nor `relay.mqtt_codec` contains
code that could encode an application message (``tests/relay/test_one_way.py`` checks the
source): the relay cannot send anything toward OT, whatever the rest of the code does.

The session is persistent (Clean Start 0 with a Session Expiry Interval), so messages that
arrive while a worker is down wait in the OT broker. The subscription asks for no retained
messages (Retain Handling 2, MQTT 5 §3.8.3.1): the SUBSCRIBE sent on every reconnect would
otherwise replay each device's retained message as fresh data once the dedup window has
passed (security review S2). Messages published while the relay is away are queued in its
session and still arrive; only the broker's stored copies are not replayed. Nothing is acknowledged automatically: a
PUBACK leaves only through `ack`/`ack_many`, which the worker calls after it made the message
safe and audited (ADR 0050). Acks carry the connection generation they were received on; one
for an older connection is dropped (the broker redelivers on the resumed session, and the
dedup window drops the copy).

    source = OTSource(endpoint, client_id="idmz-relay-0", subscription="acme/#",
                      receive_maximum=1000, session_expiry_s=604800,
                      max_packet_bytes=1 << 20, on_delivery=handle, on_state=print,
                      on_read_done=lambda: None)
    source.start()   # connects in the background, reconnects (1..5 s backoff) until stop()
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import NamedTuple

from policies.envelope import MSG_ID_PROPERTY
from relay.config import BrokerEndpoint
from relay.errors import MQTTProtocolError, OTBrokerUpstreamError
from relay.mqtt_codec import (
    MESSAGE,
    SUBACK,
    Connack,
    RetainHandling,
    decode_message,
    decode_suback,
    encode_connect,
    encode_pubacks,
    encode_subscribe,
    reason_name,
)
from relay.mqtt_link import Link

_log = logging.getLogger("relay.ot")
_MSG_ID_KEY = MSG_ID_PROPERTY.encode()
_SUBSCRIBE_ID = 1
AckToken = tuple[int, int, int]  # (connection generation, packet id, qos)


class Delivery(NamedTuple):
    """One message from the OT broker. ``ack_token`` is only meaningful to `OTSource.ack`.
    (A named tuple: built for every message, three times cheaper than a frozen dataclass.)"""

    topic: str
    payload: bytes
    property_msg_id: str | None
    redelivered: bool
    ack_token: AckToken


class OTSource:
    """``on_delivery``, ``on_read_done`` (after the deliveries of one socket read) and
    ``on_state`` run on the link's thread; ``ack``/``ack_many`` may be called from any thread."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        client_id: str,
        subscription: str,
        receive_maximum: int,
        session_expiry_s: int,
        max_packet_bytes: int,
        on_delivery: Callable[[Delivery], None],
        on_state: Callable[[bool], None],
        on_read_done: Callable[[], None] | None = None,
        reconnect_delay_s: tuple[float, float] = (1.0, 5.0),
        more_subscriptions: tuple[str, ...] = (),
        side: str = "OT",  # the log's name for the broker; "IT" for the $SYS watch there
    ) -> None:
        self._subscription = subscription
        self._more = more_subscriptions  # plain filters beside it (Sparkplug, ADR 0110)
        self._label = " ".join((_redacted(subscription), *more_subscriptions))
        self._on_delivery = on_delivery
        self._on_state = on_state
        self._on_read_done = on_read_done
        self._subscribed = False
        self._link = Link(
            endpoint,
            side=side,
            connect_packet=encode_connect(
                client_id,
                clean_start=False,
                keepalive_s=endpoint.keepalive_s,
                session_expiry_s=session_expiry_s,
                receive_maximum=receive_maximum,
                maximum_packet_size=max_packet_bytes,
            ),
            max_packet_bytes=max_packet_bytes,
            handler=self,
            reconnect_delay_s=reconnect_delay_s,
        )

    def start(self) -> None:
        """Connect in the background; reconnects forever until `stop`."""
        self._link.start()

    def stop(self) -> None:
        """Send DISCONNECT (the session and its queue stay on the broker) and end the reader."""
        self._link.stop()

    def ack(self, token: AckToken) -> bool:
        """Acknowledge a delivery. False when its connection is gone: the OT broker will
        deliver the message again on the resumed session (and the dedup window drops it)."""
        return self.ack_many((token,)) == 1

    def ack_many(self, tokens: Iterable[AckToken]) -> int:
        """Acknowledge deliveries with one socket write; returns how many were acknowledged
        (QoS 0 ones need no PUBACK and count). Those of an older connection are dropped."""
        generation, count, packet_ids = self._link.generation, 0, []
        for gen, packet_id, qos in tokens:
            if gen == generation:
                count += 1
                if qos:
                    packet_ids.append(packet_id)
        if not packet_ids:
            return count
        return count if self._link.send(encode_pubacks(packet_ids), generation) else 0

    # -- LinkHandler (the link's thread) ----------------------------------------------------

    def on_connected(self, connack: Connack, generation: int) -> None:
        self._subscribed = False
        subscribe = encode_subscribe(
            _SUBSCRIBE_ID,
            self._subscription,
            *self._more,
            retain_handling=RetainHandling.DO_NOT_SEND,
        )
        self._link.send(subscribe, generation)
        _log.info(
            "connected to the OT broker (session %s); subscribing to %s",
            "resumed" if connack.session_present else "new",
            self._label,
        )
        self._on_state(True)

    def on_disconnected(self, was_up: bool) -> None:
        if was_up:
            self._on_state(False)

    def on_packets(self, packets: list[tuple[int, bytes]], generation: int) -> None:
        deliver = self._on_delivery
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
            elif kind == SUBACK:
                self._check_suback(first & 0x0F, body)
            else:
                raise MQTTProtocolError(f"unexpected packet 0x{first:02X} from the OT broker")
        if self._on_read_done is not None:
            self._on_read_done()

    def _check_suback(self, flags: int, body: bytes) -> None:
        packet_id, codes = decode_suback(flags, body)
        if packet_id != _SUBSCRIBE_ID or self._subscribed:
            raise MQTTProtocolError(f"a SUBACK for packet {packet_id}, which we did not send")
        refused = [c for c in codes if c != 0x01]  # below QoS 1 the broker would not hold them
        if refused or len(codes) != 1 + len(self._more):
            raise OTBrokerUpstreamError(
                f"the OT broker did not grant the subscription {self._label} at QoS 1: "
                f"{', '.join(reason_name(c) for c in refused) or 'a reason code missing'}"
            )
        self._subscribed = True
        _log.info("subscribed to %s", self._label)


def _redacted(subscription: str) -> str:
    """A shared subscription's group name is derived from the relay's secret (ADR 0034):
    whoever reads the logs must not learn it."""
    if subscription.startswith("$share/"):
        return "$share/<group>/" + subscription.split("/", 2)[2]
    return subscription
