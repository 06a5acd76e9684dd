"""The outbound uplink: MQTT 5 over mutual TLS (paho behind this one module).

Only outbound: the gateway dials the IDMZ broker; nothing listens. Delivery is at-least-once
with the outbox as the only store: a message leaves the outbox when the broker's PUBACK for it
arrives (QoS 1, MQTT 5 section 4.3.2), never before. paho's own offline queue and automatic
reconnect are not used; every connection attempt is a fresh client, so nothing is resent behind
the outbox's back and a PUBACK can only acknowledge a message of its own connection.

On every connection the outbox is split at its current last sequence number:
* live lane: messages appended after the connection came up go out at once, in order;
* back-fill lane: what waited during the outage goes out in order, paced at
  ``backfill_messages_per_s`` so live data is not starved (Cirrus Link's flush pacing).
Every message carries its outbox id as the MQTT 5 user property ``idmz-msg-id`` (the relay
de-duplicates on it). A change of the credential files (renewal) closes the connection and the
next one uses the new files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bedrock.files import write_atomic
from edge.credentials import client_tls_context, fingerprint, load_credentials
from edge.errors import ConfigError
from edge.outbox import Outbox, OutboxMessage
from edge.sources import Backoff
from edge.sparkplug import EdgeNodeState
from policies.envelope import MSG_ID_PROPERTY

_log = logging.getLogger("idmz.edge.uplink")


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    host: str
    port: int
    credential_dir: Path
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    max_inflight: int = 32
    backfill_messages_per_s: float = 200.0
    credential_check_interval_s: float = 2.0
    shutdown_drain_s: float = 2.0
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=0.5, max_s=30.0))
    sparkplug: SparkplugUplink | None = None  # format = "sparkplug" (ADR 0110)


@dataclass(frozen=True, slots=True)
class SparkplugUplink:
    """``[uplink] format = "sparkplug"``: the node's group and id (the policy's
    ``[sparkplug.nodes]`` entry for this identity) and where bdSeq survives restarts."""

    group: str
    node: str
    bd_seq_path: Path

    def next_bd_seq(self) -> int:
        """The bdSeq of the next connection (0-255), persisted before it is used."""
        try:
            last = int(self.bd_seq_path.read_text().strip())
        except (OSError, ValueError):
            last = -1
        bd_seq = (last + 1) % 256
        write_atomic(self.bd_seq_path, f"{bd_seq}\n".encode(), 0o600)
        return bd_seq


@dataclass
class UplinkStats:
    connected: bool = False
    connections: int = 0
    published: int = 0
    acked: int = 0
    credential_reloads: int = 0
    backlog_remaining: int = 0
    last_error: str = ""


class _Connection:
    """One paho client for one connection attempt; callbacks run on paho's thread and only
    put events on a queue the event loop drains."""

    def __init__(self, settings: UplinkSettings, client_id: str) -> None:
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        c.tls_set_context(client_tls_context(settings.credential_dir))
        c.connect_timeout = settings.connect_timeout_s
        c.max_inflight_messages_set(settings.max_inflight)
        c.max_queued_messages_set(settings.max_inflight)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_log = self._on_log
        self.client = c
        # paho reports a lost connection as "Unspecified error"; the cause (e.g. the broker's
        # TLS alert "certificate revoked", which TLS 1.3 delivers after the handshake, on the
        # first read) only reaches its error log. Keep the last one to say why.
        self.socket_error = ""

    def _on_log(self, _c: Any, _u: Any, level: int, buf: str) -> None:
        # Only paho's error lines: socket and TLS failures, never payloads (those are debug).
        if level == mqtt.MQTT_LOG_ERR:
            self.socket_error = buf[:300]

    def why(self, reason: Any) -> str:
        """``reason`` (a reason code or text) with the socket error behind it, if any."""
        return f"{reason} ({self.socket_error})" if self.socket_error else str(reason)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.events.put(("connect", reason))

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self.events.put(("fail", "connect failed"))

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.events.put(("disconnect", reason))

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self.events.put(("puback", (mid, reason)))


class Uplink:
    def __init__(
        self,
        settings: UplinkSettings,
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.outbox = outbox
        self._clock = clock
        self.stats = UplinkStats()
        self._wake = asyncio.Event()
        self._node: EdgeNodeState | None = None  # Sparkplug: the edge node's definitions

    def notify(self) -> None:
        """New messages are in the outbox (called from the event loop)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        rng = random.Random()  # noqa: S311 - jitter, not security
        while not stop.is_set():
            try:
                went_up = await self._connection(stop)
            except ConfigError as exc:
                self.stats.last_error = str(exc)
                _log.error("uplink: %s", exc)
                went_up = False
            self.stats.connected = False
            if stop.is_set():
                break
            attempt = 0 if went_up else attempt + 1
            delay = self.settings.backoff.delay_s(attempt, rng.uniform(-1, 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _connection(self, stop: asyncio.Event) -> bool:
        """One connection from dial to loss; True if it came up."""
        s = self.settings
        creds = load_credentials(s.credential_dir)
        conn = _Connection(s, creds.identity.path)
        client = conn.client
        if s.sparkplug is not None:  # the will is this connection's NDEATH, its bdSeq persisted
            if self._node is None:
                self._node = EdgeNodeState(s.sparkplug.group, s.sparkplug.node, creds.identity.path)
            bd_seq = s.sparkplug.next_bd_seq()
            client.will_set(*self._node.death(bd_seq, self._ms()), qos=1, retain=False)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                None, lambda: client.connect(s.host, s.port, keepalive=s.keepalive_s)
            )
        except ssl.SSLError as exc:  # TLS 1.2 refuses in the handshake itself
            self.stats.last_error = f"broker {s.host}:{s.port} refused TLS: {exc}"
            _log.warning("uplink: %s", self.stats.last_error)
            return False
        except OSError as exc:
            self.stats.last_error = f"broker {s.host}:{s.port} unreachable: {exc}"
            _log.warning("uplink: %s", self.stats.last_error)
            return False
        client.loop_start()
        try:
            if not await self._await_connack(conn, stop):
                return False
            self.stats.connected = True
            self.stats.connections += 1
            if self._node is not None:
                client.publish(*self._node.birth(bd_seq=bd_seq, now_ms=self._ms()), qos=1)
            _log.info("uplink: connected to %s:%d as %s", s.host, s.port, creds.identity.path)
            await self._pump(conn, stop, creds.fingerprint)
            return True
        finally:
            self.stats.connected = False
            with contextlib.suppress(Exception):
                if self._node is not None and client.is_connected():  # an intentional death
                    client.publish(*self._node.death(self._node.bd_seq, self._ms()), qos=0)
                client.disconnect()
            await loop.run_in_executor(None, client.loop_stop)

    async def _await_connack(self, conn: _Connection, stop: asyncio.Event) -> bool:
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while time.monotonic() < deadline and not stop.is_set():
            try:
                kind, reason = conn.events.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.02)
                continue
            if kind == "connect" and not reason.is_failure:
                return True
            self.stats.last_error = f"broker refused the connection: {conn.why(reason)}"
            _log.warning("uplink: %s", self.stats.last_error)
            return False
        self.stats.last_error = "no CONNACK within connect_timeout_s"
        return False

    async def _pump(
        self, conn: _Connection, stop: asyncio.Event, creds_fp: tuple[tuple[str, int, int], ...]
    ) -> None:
        s = self.settings
        boundary = self.outbox.last_seq()  # <= boundary: back-fill lane; > boundary: live lane
        live_cursor = boundary
        backfill_cursor = 0
        backfill_done = boundary == 0
        tokens = 0.0
        last_refill = time.monotonic()
        next_cred_check = time.monotonic() + s.credential_check_interval_s
        inflight: dict[int, str] = {}
        while not stop.is_set():
            # 1. Events from paho's thread: PUBACKs delete from the outbox; loss ends the pump.
            if self._handle_events(conn, inflight):
                return
            # 2. Renewed credentials: reconnect with the new files.
            now_m = time.monotonic()
            if now_m >= next_cred_check:
                next_cred_check = now_m + s.credential_check_interval_s
                if fingerprint(s.credential_dir) != creds_fp:
                    _log.info("uplink: credential files changed; reconnecting with them")
                    self.stats.credential_reloads += 1
                    return
            # 3. Publish: live lane first, then paced back-fill.
            room = s.max_inflight - len(inflight)
            if room > 0:
                batch = self.outbox.next_batch(after_seq=live_cursor, limit=room)
                for msg in batch:
                    self._publish(conn, msg, inflight, historical=False)
                    live_cursor = msg.seq
                room -= len(batch)
            tokens = min(
                s.backfill_messages_per_s,
                tokens + (now_m - last_refill) * s.backfill_messages_per_s,
            )
            last_refill = now_m
            if not backfill_done and room > 0 and tokens >= 1:
                batch = self.outbox.next_batch(
                    after_seq=backfill_cursor, before_seq=boundary + 1, limit=min(room, int(tokens))
                )
                for msg in batch:
                    self._publish(conn, msg, inflight, historical=True)
                    backfill_cursor = msg.seq
                tokens -= len(batch)
                backfill_done = not batch
            self.stats.backlog_remaining = (
                0 if backfill_done else max(0, boundary - backfill_cursor)
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.02)
        # Stopping: give in-flight messages a moment to be acknowledged, so fewer are sent
        # twice after a restart (they stay in the outbox either way).
        deadline = time.monotonic() + s.shutdown_drain_s
        while inflight and time.monotonic() < deadline:
            if self._handle_events(conn, inflight):
                return
            await asyncio.sleep(0.02)

    def _handle_events(self, conn: _Connection, inflight: dict[int, str]) -> bool:
        """Apply PUBACKs from paho's thread; True when the connection is gone."""
        acked: list[str] = []
        lost = False
        while not lost:
            try:
                kind, value = conn.events.get_nowait()
            except queue.Empty:
                break
            if kind == "puback":
                mid, reason = value
                msg_id = inflight.pop(mid, None)
                if msg_id is not None and not reason.is_failure:
                    acked.append(msg_id)
                elif msg_id is not None:
                    _log.warning("uplink: broker refused message %s: %s", msg_id, reason)
            elif kind in ("disconnect", "fail"):
                self.stats.last_error = f"connection lost: {conn.why(value)}"
                _log.warning("uplink: %s", self.stats.last_error)
                lost = True
        if acked:
            self.stats.acked += self.outbox.ack(acked)
        return lost

    def _ms(self) -> int:
        return int(self._clock() * 1000)

    def _publish(
        self, conn: _Connection, msg: OutboxMessage, inflight: dict[int, str], *, historical: bool
    ) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [(MSG_ID_PROPERTY, msg.id)]
        topic, payload = msg.topic, msg.payload
        if self._node is None:
            props.ContentType = "application/json"
        else:  # Sparkplug: the envelope becomes this connection's NDATA (edge.sparkplug)
            changed, ts_ms, rebirth = self._node.learn(msg.payload)
            if not changed:  # nothing changed: nothing to send, the message is done
                self.stats.acked += self.outbox.ack([msg.id])
                return
            if rebirth:
                birth = self._node.birth(bd_seq=self._node.bd_seq, now_ms=self._ms())
                conn.client.publish(*birth, qos=1)
            topic, payload = self._node.data(
                changed, ts_ms, now_ms=self._ms(), historical=historical
            )
        info = conn.client.publish(topic, payload, qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            conn.events.put(("disconnect", f"publish failed: {mqtt.error_string(info.rc)}"))
            return
        inflight[info.mid] = msg.id
        self.stats.published += 1
