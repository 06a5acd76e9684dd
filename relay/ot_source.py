"""The OT side: subscribe and acknowledge. Nothing else.

`OTSource` can subscribe (once, to the shared subscription it was built for) and acknowledge
messages it delivered. It has no method that publishes, and this module never calls a publish
function (``tests/relay/test_one_way.py`` checks the source): the relay cannot send anything
toward OT, whatever the rest of the code does.

The session is persistent (``clean_start=False`` with a session expiry), so messages that arrive
while a worker is down wait in the OT broker; acknowledgements are manual (paho ``manual_ack``),
so a message is acknowledged only after the relay has made it safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from relay.config import BrokerEndpoint
from relay.errors import OTBrokerUpstreamError
from relay.mqtt_session import new_client

_log = logging.getLogger("relay.ot")
MSG_ID_PROPERTY = "idmz-msg-id"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message from the OT broker. ``ack_token`` is only meaningful to `OTSource.ack`."""

    topic: str
    payload: bytes
    property_msg_id: str | None
    redelivered: bool
    ack_token: tuple[int, int, int]  # (connection generation, mid, qos)


class OTSource:
    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        client_id: str,
        share_group: str | None,
        topic_filter: str,
        receive_maximum: int,
        session_expiry_s: int,
        on_delivery: Callable[[Delivery], None],
        on_state: Callable[[bool], None],
    ) -> None:
        self._endpoint = endpoint
        # One worker: a plain persistent subscription (Mosquitto 2.0.11 restores it from
        # persistence after a broker restart and keeps strict order). Several workers: an
        # MQTT 5 shared subscription (ADR 0052 explains what 2.0.11 loses across a restart).
        self._subscription = (
            topic_filter if share_group is None else f"$share/{share_group}/{topic_filter}"
        )
        self._on_delivery = on_delivery
        self._on_state = on_state
        self._generation = 0
        self._client = new_client(endpoint, client_id, manual_ack=True, auto_reconnect=True)
        self._client.reconnect_delay_set(1, 5)
        self._connect_props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._connect_props.SessionExpiryInterval = session_expiry_s
        self._connect_props.ReceiveMaximum = receive_maximum
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._stopping = False

    def start(self) -> None:
        """Connect in the background; reconnects forever until `stop`."""
        try:
            self._client.connect_async(
                self._endpoint.host,
                self._endpoint.port,
                keepalive=self._endpoint.keepalive_s,
                clean_start=False,
                properties=self._connect_props,
            )
        except (OSError, ValueError) as exc:
            raise OTBrokerUpstreamError(
                f"cannot connect to the OT broker {self._endpoint.host}:{self._endpoint.port}: {exc}"
            ) from exc
        self._client.loop_start()

    def ack(self, token: tuple[int, int, int]) -> bool:
        """Acknowledge a delivery. False when its connection is gone: the OT broker will
        deliver the message again on the resumed session (and the dedup window drops it)."""
        generation, mid, qos = token
        # No lock here: paho may hold its packet lock while it runs on_disconnect, and a lock
        # taken around client.ack() would deadlock against it. A connection that drops between
        # this check and the ack is harmless: Mosquitto resends an unacknowledged message with
        # the same packet id on the resumed session, so a late ack can only confirm the same
        # message, which is already safe.
        if generation != self._generation:
            return False
        return self._client.ack(mid, qos) == mqtt.MQTT_ERR_SUCCESS

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    # -- paho callbacks (paho's network thread) ------------------------------------------

    def _handle_connect(
        self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            _log.error("OT broker refused the relay: %s", reason)
            return
        self._generation += 1  # only paho's thread writes it
        client.subscribe(self._subscription, qos=1)
        _log.info("connected to the OT broker; subscribed to %s", self._subscription)
        self._on_state(True)

    def _handle_disconnect(
        self, _client: mqtt.Client, _ud: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        self._generation += 1
        if not self._stopping:
            _log.warning("lost the OT broker (%s); reconnecting", reason)
        self._on_state(False)

    def _handle_message(self, _client: mqtt.Client, _ud: Any, msg: mqtt.MQTTMessage) -> None:
        prop_id: str | None = None
        props = getattr(msg, "properties", None)
        user = getattr(props, "UserProperty", None) if props is not None else None
        if user:
            for key, value in user:
                if key == MSG_ID_PROPERTY:
                    prop_id = value
                    break
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "surrogateescape")
        self._on_delivery(
            Delivery(
                topic,
                bytes(msg.payload),
                prop_id,
                bool(msg.dup),
                (self._generation, msg.mid, msg.qos),
            )
        )
