"""The IT side: publish. Nothing else.

`ITSink` can publish QoS 1 messages with MQTT 5 user properties and tells the worker when the
IT broker acknowledged each one. It has no method that subscribes, and this module never calls
a subscribe function (``tests/relay/test_one_way.py`` checks the source): nothing from the IT
side can ever reach the relay, so nothing can flow from IT toward OT.

Each connection uses a fresh paho client with a clean session. When a connection drops, every
message published on it and not yet acknowledged is handed back to the worker in publish order
(``on_down``), which spools it; paho never replays it behind our back.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from relay.config import BrokerEndpoint
from relay.mqtt_session import new_client

_log = logging.getLogger("relay.it")
CONNECT_TIMEOUT_S = 10.0
_USER_PROPERTY = b"\x26"  # MQTT 5 property identifier 38: a UTF-8 string pair


def pack_user_properties(pairs: Sequence[tuple[str, str]]) -> bytes:
    """The MQTT 5 PUBLISH property block (length + properties) holding only user properties:
    the bytes paho's generic `Properties.pack` produces, at a fraction of its cost."""
    body = bytearray()
    for key, value in pairs:
        body += _USER_PROPERTY
        for text in (key, value):
            raw = text.encode("utf-8")  # strict: a lone surrogate is an error, as in paho
            if len(raw) > 0xFFFF:
                raise ValueError("an MQTT user property string is longer than 65535 bytes")
            body += struct.pack("!H", len(raw))
            body += raw
    n, prefix = len(body), bytearray()
    while True:  # Variable Byte Integer
        n, digit = divmod(n, 128)
        prefix.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(prefix + body)


class UserProperties(Properties):
    """PUBLISH properties made of user properties only, encoded once at construction.

    paho calls only ``pack()`` on a publish's properties (again for a resend); its generic
    encoder and attribute checks cost about a fifth of a worker's CPU per message."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        object.__setattr__(self, "_pairs", tuple(pairs))
        object.__setattr__(self, "_packed", pack_user_properties(pairs))

    def pack(self) -> bytes:
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed

    def __str__(self) -> str:
        return f"[UserProperty : {list(object.__getattribute__(self, '_pairs'))}]"


class ITSink:
    """``on_acked(ref, ok)`` runs on paho's thread with paho's lock held: it must only queue.
    ``on_down(refs)`` and ``on_up()`` run on the sink's own thread."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        client_id: str,
        on_acked: Callable[[object, bool], None],
        on_down: Callable[[Sequence[object]], None],
        on_up: Callable[[], None],
        reconnect_delay_s: float = 0.5,
        max_reconnect_delay_s: float = 5.0,
    ) -> None:
        self._endpoint = endpoint
        self._client_id = client_id
        self._on_acked = on_acked
        self._on_down = on_down
        self._on_up = on_up
        self._delay = (reconnect_delay_s, max_reconnect_delay_s)
        self._lock = threading.Lock()  # publish vs. connection changes
        self._map_lock = threading.Lock()  # leaf lock: mid -> ref
        self._refs: dict[int, object] = {}
        self._early: dict[int, bool] = {}
        self._client: mqtt.Client | None = None
        self._up = False
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="it-sink", daemon=True)

    @property
    def up(self) -> bool:
        return self._up

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._lost.set()
        self._thread.join(timeout=10)

    def publish(
        self, topic: str, payload: bytes, properties: Sequence[tuple[str, str]], ref: object
    ) -> bool:
        """Publish QoS 1. False when not connected (the caller spools the message)."""
        props = UserProperties(properties)
        with self._lock:
            client = self._client
            if not self._up or client is None:
                return False
            info = client.publish(topic, payload, qos=1, properties=props)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._take_down_locked()
                return False
            with self._map_lock:
                early = self._early.pop(info.mid, None)
                if early is None:
                    self._refs[info.mid] = ref
        if early is not None:
            self._on_acked(ref, early)
        return True

    # -- connection management (own thread) --------------------------------------------

    def _run(self) -> None:
        delay = self._delay[0]
        while not self._stop.is_set():
            client = self._connect()
            if client is None:
                self._stop.wait(delay)
                delay = min(delay * 2, self._delay[1])
                continue
            delay = self._delay[0]
            self._lost.wait()
            with self._lock:
                self._take_down_locked()
            client.disconnect()
            client.loop_stop()

    def _connect(self) -> mqtt.Client | None:
        connected = threading.Event()
        result: list[Any] = []
        client = new_client(self._endpoint, self._client_id, manual_ack=False, auto_reconnect=False)
        client.max_inflight_messages_set(65535)

        def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            result.append(reason)
            connected.set()

        def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not self._stop.is_set():
                _log.warning("lost the IT broker (%s)", reason)
            connected.set()
            self._lost.set()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = self._handle_publish
        self._lost.clear()
        try:
            client.connect(self._endpoint.host, self._endpoint.port, self._endpoint.keepalive_s)
        except OSError as exc:
            _log.warning(
                "cannot reach the IT broker %s:%s: %s",
                self._endpoint.host,
                self._endpoint.port,
                exc,
            )
            return None
        client.loop_start()
        if not connected.wait(CONNECT_TIMEOUT_S) or not result or result[0].is_failure:
            _log.warning(
                "IT broker did not accept the relay: %s", result[0] if result else "timeout"
            )
            client.loop_stop()
            return None
        with self._lock:
            self._client = client
            self._up = True
        _log.info("connected to the IT broker")
        self._on_up()
        if self._lost.is_set():  # dropped between CONNACK and now
            return client
        return client

    def _take_down_locked(self) -> None:
        """Mark the connection down and hand every unacknowledged message back, in order."""
        was_up, self._up = self._up, False
        with self._map_lock:
            refs = [self._refs[mid] for mid in sorted(self._refs, key=self._refs_order)]
            self._refs.clear()
            self._early.clear()
        self._lost.set()
        if was_up or refs:
            self._on_down(refs)

    def _refs_order(self, mid: int) -> int:
        ref = self._refs[mid]
        return int(getattr(ref, "seq", 0))

    def _handle_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        ok = not reason.is_failure
        with self._map_lock:
            ref = self._refs.pop(mid, None)
            if ref is None:
                self._early[mid] = ok
                return
        self._on_acked(ref, ok)
