"""Putting the gateway's messages in the outbox: envelope, id, and what a refusal means.

The id is assigned as the message enters the outbox (a UUIDv7 of the clock); a stored message
wakes the uplink. A full or failing outbox refuses the message: it is logged and counted by
the outbox, and the gateway keeps reading and alarming locally (``publish`` returns None).

>>> p = Publisher("acme/p/a/l/c/gw", outbox, clock=time.time, on_stored=uplink.notify)  # doctest: +SKIP
>>> p.publish("status", {"windows": 3})                                               # doctest: +SKIP
'0190f1c2-...'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from edge.envelope import envelope_bytes, envelope_topic
from edge.errors import OutboxFullError, OutboxStorageError
from edge.outbox import Outbox, uuid7

_log = logging.getLogger("idmz.edge.gateway")


class Publisher:
    def __init__(
        self,
        device: str,
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.time,
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.device = device
        self.outbox = outbox
        self.clock = clock
        self.on_stored = on_stored

    def publish(
        self, kind: str, data: Mapping[str, object], *, subtopic: str | None = None
    ) -> str | None:
        """Put one message in the outbox; returns its id (None if the outbox refused it)."""
        now = self.clock()
        msg_id = uuid7(now)
        payload = envelope_bytes(msg_id, now, self.device, kind, data)
        topic = envelope_topic(self.device, kind, subtopic)
        try:
            self.outbox.append(topic, payload, now=now, msg_id=msg_id)
        except OutboxFullError as exc:
            _log.warning("outbox refused a %s message: %s", kind, exc)
            return None
        except OutboxStorageError as exc:  # disk full or failing: keep reading and alarming
            _log.error("could not store a %s message: %s", kind, exc)
            return None
        if self.on_stored is not None:
            self.on_stored()
        return msg_id
