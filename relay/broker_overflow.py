"""Messages a managed broker dropped because a client's queue was full (ADR 0058).

The brokers hold at most ``max_queued_messages`` per client beyond its in-flight window (the
relay's backlog while it is down or slow). Past that Mosquitto 2.0.11 drops the message and
counts it in ``$SYS/broker/publish/messages/dropped`` (retained, republished every
``sys_interval``). `DroppedWatch` subscribes to that counter with the relay's certificate on
the broker's bound-id listener (the plugin's rules grant the relay exactly this ``$SYS`` topic)
and reports each increase, so an overflow is an audit record and an alarm, never silent.

    watch = DroppedWatch("ot", endpoint, client_id, on_dropped=print)
    watch.start()   # on_dropped("ot", newly_dropped, total) from the watch's thread
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from policies.broker_config import SYS_DROPPED_TOPIC
from relay.config import BrokerEndpoint
from relay.ot_source import Delivery, OTSource

_log = logging.getLogger("relay.broker_overflow")
MAX_COUNTER_BYTES = 20  # an unsigned long in decimal


class DroppedWatch:
    """Follows one broker's dropped-message counter; ``on_dropped(zone, new, total)``."""

    def __init__(
        self,
        zone: str,
        endpoint: BrokerEndpoint,
        client_id: str,
        on_dropped: Callable[[str, int, int], None],
    ) -> None:
        self._zone = zone
        self._on_dropped = on_dropped
        self._last: int | None = None
        self._source = OTSource(
            endpoint,
            client_id=client_id,
            subscription=SYS_DROPPED_TOPIC,
            receive_maximum=10,
            session_expiry_s=0,
            max_packet_bytes=4096,
            on_delivery=self._on_delivery,
            on_state=lambda _up: None,
            side=zone.upper(),
        )

    def start(self) -> None:
        self._source.start()

    def stop(self) -> None:
        self._source.stop()

    def _on_delivery(self, delivery: Delivery) -> None:
        self._source.ack(delivery.ack_token)
        text = delivery.payload[: MAX_COUNTER_BYTES + 1]
        if (
            delivery.topic != SYS_DROPPED_TOPIC
            or not text.isdigit()
            or len(text) > MAX_COUNTER_BYTES
        ):
            _log.warning("%s broker: ignored an unexpected dropped-count message", self._zone)
            return
        total = int(text)
        # The first value counts since the broker started; a smaller one means it restarted.
        last = 0 if self._last is None or total < self._last else self._last
        self._last = total
        if total > last:
            self._on_dropped(self._zone, total - last, total)
