"""The Sparkplug primary host STATE the OT side of the appliance shows (ADR 0110).

Sparkplug edge nodes may be configured to publish only while their primary host application
is online, which they learn from the retained ``spBv1.0/STATE/<host_id>`` message (Sparkplug
3.0 sections 5.4, 7). Across a one-way IDMZ no host's STATE can reach OT, so the appliance
publishes one there itself, from configuration only: the policy's ``[sparkplug] host_id``,
``{"online": true, "timestamp": <ms>}`` retained at QoS 1 when it starts, and the same with
``"online": false`` as the MQTT will (same timestamp, as the spec requires) and on a clean stop.

`StatePublisher` takes no message from anywhere: its only payload is `policies.sparkplug.
state_payload` of a boolean and its own clock, and it imports nothing of the IT side
(``tests/relay/test_sparkplug_one_way.py`` checks the source). Each change it makes is reported
to ``on_change`` (the appliance audits it as ``relay.sparkplug.state``). The OT broker's ACL
lets the relay's identity write that one topic and nothing else on OT.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable

from audit.events import AuditEvent, Outcome
from bedrock.clock import utc_now
from policies import Policy
from policies.broker_config import relay_client_id
from policies.sparkplug import state_payload, state_topic
from relay.config import BrokerEndpoint, WorkerConfig
from relay.mqtt_codec import Connack, variable_byte_integer
from relay.mqtt_link import Link
from relay.share_secret import ensure_share_secret

_log = logging.getLogger("relay.sparkplug_state")
_CONNECT, _PUBLISH, _PUBACK, _DISCONNECT = 1, 3, 4, 14
_PACKET_ID = 1


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + variable_byte_integer(len(body)) + body


def _connect(client_id: str, keepalive_s: int, topic: str, will: bytes) -> bytes:
    """CONNECT (MQTT 5 §3.1): clean start, will QoS 1 retained (flags 0x2E), no properties."""
    body = (
        _utf8("MQTT") + b"\x05\x2e" + struct.pack("!H", keepalive_s) + b"\x00"
        + _utf8(client_id) + b"\x00" + _utf8(topic) + struct.pack("!H", len(will)) + will
    )  # fmt: skip
    return _frame(_CONNECT << 4, body)


def _publish(topic: str, payload: bytes) -> bytes:
    """PUBLISH (§3.3) QoS 1, RETAIN, no properties."""
    return _frame(
        _PUBLISH << 4 | 0x03, _utf8(topic) + struct.pack("!H", _PACKET_ID) + b"\x00" + payload
    )


class StatePublisher:
    """Keeps ``spBv1.0/STATE/<host_id>`` on the OT broker saying what the configuration says."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        host_id: str,
        client_id: str,
        on_change: Callable[[bool, int], None],
        clock_ms: Callable[[], int] = lambda: int(utc_now().timestamp() * 1000),
    ) -> None:
        self.topic = state_topic(host_id)
        self._on_change = on_change
        self._timestamp = clock_ms()  # one birth timestamp, shared with the will (spec 5.4)
        self._online: bool | None = None
        self._lock = threading.Lock()
        self._generation = -1
        self._stopping = threading.Event()
        will = state_payload(online=False, timestamp_ms=self._timestamp)
        self._link = Link(
            endpoint,
            side="OT",
            connect_packet=_connect(client_id, endpoint.keepalive_s, self.topic, will),
            max_packet_bytes=4096,
            handler=self,
            reconnect_delay_s=(1.0, 5.0),
        )

    def start(self) -> None:
        self._link.start()

    def stop(self) -> None:
        """Publish ``online: false`` (a clean DISCONNECT sends no will), then disconnect."""
        self._stopping.set()
        with self._lock:
            generation = self._generation
        if generation >= 0:
            offline = state_payload(online=False, timestamp_ms=self._timestamp)
            self._link.send(_publish(self.topic, offline), generation)
            self._changed(False)
        self._link.stop()

    def _changed(self, online: bool) -> None:
        with self._lock:
            if self._online is online:
                return
            self._online = online
        self._on_change(online, self._timestamp)

    # -- LinkHandler (the link's thread) ---------------------------------------------------

    def on_connected(self, connack: Connack, generation: int) -> None:
        with self._lock:
            self._generation = generation
        online = state_payload(online=True, timestamp_ms=self._timestamp)
        self._link.send(_publish(self.topic, online), generation)

    def on_packets(self, packets: list[tuple[int, bytes]], generation: int) -> None:
        for first, body in packets:
            if first >> 4 == _PUBACK:
                code = body[2] if len(body) > 2 else 0
                if code < 0x80:
                    self._changed(True)
                else:
                    _log.error("the OT broker refused the Sparkplug STATE (reason 0x%02X)", code)

    def on_disconnected(self, was_up: bool) -> None:
        with self._lock:
            self._generation = -1
        if was_up and not self._link_stopping():
            self._changed(False)  # the broker publishes the will: offline

    def _link_stopping(self) -> bool:
        return self._stopping.is_set()


def state_publisher(
    policy: Policy, worker: WorkerConfig, record: Callable[[AuditEvent], None]
) -> StatePublisher | None:
    """The appliance's STATE publisher for ``policy``, or None without a ``host_id``. It dials
    the OT endpoint the workers use, as ``<relay identity>:<secret tag>-0-sparkplug-state``."""
    sp = policy.sparkplug
    if sp is None or sp.host_id is None:
        return None
    host_id, actor = sp.host_id, policy.relay.identity.path
    secret = ensure_share_secret(worker.share_secret_file or worker.state_dir / "share-secret")

    def audited(online: bool, timestamp_ms: int) -> None:
        record(
            AuditEvent(
                actor=actor,
                action="relay.sparkplug.state",
                resource=state_topic(host_id),
                outcome=Outcome.SUCCESS,
                reason="from the policy's [sparkplug] host_id; never copied from IT",
                after={"online": online, "timestamp": timestamp_ms},
                zone="ot",
            )
        )

    return StatePublisher(
        worker.ot,
        host_id=host_id,
        client_id=relay_client_id(policy, secret, 0, "sparkplug-state"),
        on_change=audited,
    )
