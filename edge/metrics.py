"""Prometheus metrics of one gateway, in its own registry (no process-global state).

Served, when a port is configured, on a loopback address only: it is the gateway's one
listening socket, for a local node exporter or agent to scrape. A non-loopback address is a
configuration error.
"""

from __future__ import annotations

import ipaddress
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, start_http_server

from edge.errors import ConfigError
from edge.outbox import DROP_REASONS, OutboxStats


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        p = "idmz_edge_"
        self.outbox_depth = Gauge(p + "outbox_depth_messages", "messages waiting", registry=r)
        self.outbox_bytes = Gauge(p + "outbox_bytes", "bytes waiting in the outbox", registry=r)
        self.outbox_oldest = Gauge(
            p + "outbox_oldest_age_seconds", "age of the oldest waiting message", registry=r
        )
        self.outbox_dropped = Gauge(
            p + "outbox_dropped_messages",
            "messages dropped since the outbox was created, by reason",
            ["reason"],
            registry=r,
        )
        self.uplink_connected = Gauge(p + "uplink_connected", "1 when connected", registry=r)
        self.uplink_acked = Gauge(p + "uplink_acked_messages", "PUBACKed messages", registry=r)
        self.reader_up = Gauge(
            p + "reader_up", "1 when the source is connected", ["source"], registry=r
        )
        self.tag_bad = Gauge(p + "tags_bad", "tags with bad quality now", registry=r)
        self.windows = Counter(p + "windows", "vibration windows scored", ["asset"], registry=r)
        self.anomalies = Counter(p + "anomalies", "anomaly events raised", ["asset"], registry=r)
        self.prognosis_errors = Counter(
            p + "prognosis_errors",
            "windows scored whose health, alarm level or RUL could not be assessed",
            ["asset"],
            registry=r,
        )
        self.score = Gauge(p + "anomaly_score", "last anomaly score", ["asset"], registry=r)
        self.model = Info(p + "model", "the anomaly model in use", registry=r)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def update_outbox(self, stats: OutboxStats) -> None:
        self.outbox_depth.set(stats.depth)
        self.outbox_bytes.set(stats.bytes)
        self.outbox_oldest.set(stats.oldest_age_s)
        for reason in DROP_REASONS:
            self.outbox_dropped.labels(reason).set(stats.dropped.get(reason, 0))

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the loopback-only HTTP endpoint; returns the bound port."""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ConfigError(f"metrics must listen on a loopback address; found {host!r}")
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
