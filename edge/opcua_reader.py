"""OPC UA reader (asyncua behind this one module): one subscription per server, rebuilt whole.

Field experience (OPC Publisher #2055, asyncua #70/#1333/#1660, Telegraf #19186) says that
recovering a session in place after a server restart is where gateways stop delivering data
until someone restarts them. This reader never repairs a session: when the connection is lost
(the client's watchdog, a failed keep-alive probe, or a status-change notification) it throws
the client away, reports every tag ``bad``, waits a capped exponential backoff with jitter, and
builds a new client, session, subscription and monitored items from the tag map.

Each monitored item is created on its own result: a node the server does not know
(``BadNodeIdUnknown``) makes that one tag ``bad`` and the others keep flowing. Waveform tags are
array variables (one block of samples per update, OPC UA Part 3 section 5.6.2 ValueRank 1)
monitored with a queue so blocks are not overwritten between publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeNotif
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaError

from edge.errors import PeerUnavailableError, UpstreamError
from edge.opcua_certs import application_uri_of
from edge.ports import ReadingSink, SourceReader
from edge.sources import OpcUaSource
from edge.tagmap import Quality, Reading, TagSpec

_log = logging.getLogger("idmz.edge.opcua")


def quality_of(status: ua.StatusCode) -> Quality:
    """OPC UA Part 4 section 7.39: the top two bits of a StatusCode are its severity."""
    severity = (status.value >> 30) & 0x3
    return {0: Quality.GOOD, 1: Quality.UNCERTAIN}.get(severity, Quality.BAD)


class _Handler:
    def __init__(self, reader: OpcUaReader, lost: asyncio.Event) -> None:
        self._reader = reader
        self._lost = lost

    def datachange_notification(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        self._reader._on_value(node, val, data)

    def status_change_notification(self, status: Any) -> None:
        _log.warning("OPC UA %s: subscription status change %s", self._reader.source.name, status)
        self._lost.set()


class OpcUaReader(SourceReader[OpcUaSource]):
    def __init__(
        self,
        source: OpcUaSource,
        tags: tuple[TagSpec, ...],
        sink: ReadingSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(source, tags, sink, clock=clock)
        self._by_node: dict[ua.NodeId, TagSpec] = {}
        self.connected = False
        self.sessions = 0  # sessions built so far (1 + reconnects)
        self.failed_tags: dict[str, str] = {}
        self.notifications = 0

    def status(self) -> dict[str, object]:
        """This source in the gateway's status message."""
        return {
            "kind": "opcua",
            "connected": self.connected,
            "sessions": self.sessions,
            "failed_tags": dict(self.failed_tags),
        }

    def _on_value(self, node: Node, val: Any, data: DataChangeNotif) -> None:
        tag = self._by_node.get(node.nodeid)
        if tag is None:
            return
        self.notifications += 1
        dv = data.monitored_item.Value
        status = dv.StatusCode if dv is not None and dv.StatusCode is not None else ua.StatusCode()
        ts_dt = dv.SourceTimestamp if dv is not None else None
        ts = ts_dt.timestamp() if ts_dt is not None else self._clock()
        quality = quality_of(status)
        value: float | np.ndarray | None
        try:
            if tag.kind == "waveform":
                value = np.asarray(val, dtype=np.float64).ravel()
            else:
                value = float(val)
        except (TypeError, ValueError):
            value, quality = None, Quality.BAD
        reason = "" if quality is Quality.GOOD else f"status {status.name}"
        self._sink(Reading(tag.name, value, quality, ts, reason))

    async def run(self, stop: asyncio.Event) -> None:
        """Read until `stop` is set; rebuild everything after any loss."""
        attempt = 0
        rng = random.Random()  # noqa: S311 - jitter, not security
        while not stop.is_set():
            try:
                await self._session(stop)
                attempt = 0
                delay = self.source.backoff.initial_s
            except UpstreamError as exc:
                _log.warning("%s; tags reported bad, rebuilding the session", exc)
                delay = self.source.backoff.delay_s(attempt, rng.uniform(-1, 1))
                attempt += 1
            if stop.is_set():
                break
            self._report_all_bad(f"OPC UA server {self.source.name} unavailable")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _session(self, stop: asyncio.Event) -> None:
        s = self.source
        client = Client(
            s.endpoint,
            timeout=s.request_timeout_s,
            watchdog_intervall=s.watchdog_interval_s,
            auto_reconnect=False,
        )
        await self._secure(client)
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            _log.warning("OPC UA %s: connection lost: %r", s.name, exc)
            lost.set()

        client.connection_lost_callback = on_lost
        try:
            try:
                await asyncio.wait_for(client.connect(), timeout=s.connect_timeout_s)
            except (OSError, TimeoutError, UaError) as exc:
                raise PeerUnavailableError(
                    f"OPC UA server {s.name} at {s.endpoint} unreachable: {exc!r}"
                ) from exc
            try:
                await self._subscribe(client, lost)
            except (OSError, TimeoutError, UaError) as exc:
                raise PeerUnavailableError(
                    f"OPC UA server {s.name}: subscription failed: {exc!r}"
                ) from exc
            self.connected = True
            self.sessions += 1
            _log.info("OPC UA %s: session %d up", s.name, self.sessions)
            stop_wait = asyncio.create_task(stop.wait())
            lost_wait = asyncio.create_task(lost.wait())
            try:
                await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                lost_wait.cancel()
            if lost.is_set() and not stop.is_set():
                raise PeerUnavailableError(f"OPC UA server {s.name}: connection lost")
        finally:
            self.connected = False
            self._by_node = {}
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=2.0)

    async def _secure(self, client: Client) -> None:
        sec = self.source.security
        if sec is None:
            _log.warning(
                "OPC UA %s: SecurityPolicy None: values are neither authenticated nor encrypted",
                self.source.name,
            )
            return
        policy = {
            "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
            "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
            "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
        }[sec.policy]
        mode = getattr(ua.MessageSecurityMode, sec.mode)
        client.application_uri = application_uri_of(sec.certificate)
        try:
            await client.set_security(
                policy,  # type: ignore[type-abstract]
                certificate=str(sec.certificate),
                private_key=str(sec.private_key),
                server_certificate=str(sec.server_certificate),
                mode=mode,
            )
        except (OSError, ValueError, UaError) as exc:
            raise PeerUnavailableError(
                f"OPC UA server {self.source.name}: cannot set up {sec.policy} {sec.mode}: {exc}"
            ) from exc

    async def _subscribe(self, client: Client, lost: asyncio.Event) -> None:
        s = self.source
        handler = _Handler(self, lost)
        sub = await client.create_subscription(s.publishing_interval_ms, handler)
        nodes: list[Node] = []
        wanted: list[TagSpec] = []
        self.failed_tags = {}
        for tag in self.tags:
            try:
                nodes.append(client.get_node(tag.address))
                wanted.append(tag)
            except (ValueError, UaError) as exc:
                self.failed_tags[tag.name] = f"invalid node id {tag.address!r}: {exc}"
        by_node = {node.nodeid: tag for node, tag in zip(nodes, wanted, strict=True)}
        self._by_node = by_node  # before subscribing: initial values arrive at once
        results: list[int | ua.StatusCode] = []
        if nodes:
            results = await sub.subscribe_data_change(
                nodes, queuesize=s.queue_size, sampling_interval=ua.Double(0.0)
            )
        for node, tag, result in zip(nodes, wanted, results, strict=True):
            if isinstance(result, ua.StatusCode):
                self.failed_tags[tag.name] = f"node {tag.address}: {result.name}"
                self._by_node.pop(node.nodeid, None)
        now = self._clock()
        for name, reason in self.failed_tags.items():
            _log.warning("OPC UA %s: tag %s not monitored: %s", s.name, name, reason)
            self._sink(Reading(name, None, Quality.BAD, now, reason))
