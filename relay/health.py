"""The appliance's loopback HTTP endpoint: ``/health`` (JSON, 200 or 503) and ``/metrics``
(Prometheus text format), built from the workers' snapshots and the appliance's own counters.

Metric names (all prefixed ``idmz_relay_``): ``forwarded_total``, ``refused_total{reason}``,
``spooled_total``, ``drained_total``, ``replayed_total``, ``duplicates_total``,
``dead_letters_total``, ``dropped_total`` (0 unless the dead-letter file is full),
``dead_letter_bytes``, ``dead_letter_full`` (alarm), ``device_forwarded_total{device}``,
``device_refused_total{device}``, ``spool_bytes``, ``inflight``, ``spool_full`` (alarm),
``it_stalled`` (alarm), ``it_unacked_s``, ``audit_ok``, ``audit_failures_total``,
``it_connected``, ``ot_connected``, ``revoked_devices``, ``broker_refused_total{broker,device}``, ``broker_dropped_total{broker}``,
``broker_restarts_total{broker}``, ``worker_restarts_total``, ``workers_alive``,
``added_latency_seconds_avg``, ``crl_seconds_to_next_update``. Counters are per worker (label ``worker``) and survive
nothing: a restarted worker starts at zero, which Prometheus ``rate()`` handles.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

Snapshots = Callable[[], dict[str, dict[str, Any]]]
Status = Callable[[], dict[str, Any]]


class _Collector:
    def __init__(self, snapshots: Snapshots, status: Status) -> None:
        self._snapshots = snapshots
        self._status = status

    def collect(self) -> Iterator[Metric]:
        snaps = self._snapshots()
        status = self._status()
        p = "idmz_relay_"
        simple = {
            "forwarded": "messages forwarded to IT and acknowledged on OT",
            "spooled": "messages written to the disk spool",
            "drained": "spooled messages delivered to IT",
            "duplicates": "messages dropped as duplicates by message id",
            "dropped": "payloads not kept (0 unless the dead-letter file is full)",
            "audit_failures": "audit writes that failed",
            "spool_full_events": "times the spool reached spool_max_bytes",
            "dead_letters": "messages refused by IT or revoked while spooled, kept aside",
            "replayed": "messages re-sent after the IT broker lost what it acknowledged",
            "sparkplug_births": "Sparkplug NBIRTH and DBIRTH messages accepted",
            "sparkplug_deaths": "Sparkplug NDEATH and DDEATH messages accepted",
            "sparkplug_gaps": "Sparkplug sequence gaps (possible loss before the relay)",
            "sparkplug_missing": "Sparkplug messages the sequence gaps skipped",
        }
        for key, doc in simple.items():
            c = CounterMetricFamily(p + key, doc, labels=["worker"])
            for worker, s in snaps.items():
                c.add_metric([worker], float(s.get(key, 0)))
            yield c
        refused = CounterMetricFamily(
            p + "refused", "messages refused, by reason", labels=["worker", "reason"]
        )
        for worker, s in snaps.items():
            for reason, n in s.get("refused", {}).items():
                refused.add_metric([worker, reason], float(n))
        yield refused
        for key, doc in (
            ("device_forwarded", "messages forwarded per device"),
            ("device_refused", "messages refused per device"),
        ):
            c = CounterMetricFamily(p + key, doc, labels=["device"])
            totals: dict[str, float] = {}
            for s in snaps.values():
                for device, n in s.get(key, {}).items():
                    totals[device] = totals.get(device, 0.0) + n
            for device, n in sorted(totals.items()):
                c.add_metric([device], n)
            yield c
        for key, doc in (
            ("spool_bytes", "bytes in the spool not yet delivered to IT"),
            ("inflight", "messages received and not yet acknowledged"),
            ("spool_full", "1 while the spool is full and OT is not acknowledged (alarm)"),
            ("dead_letter_bytes", "bytes in the dead-letter file"),
            ("dead_letter_full", "1 while the dead-letter file is full (alarm)"),
            ("it_stalled", "1 while IT publishes are outstanding with no PUBACK (alarm)"),
            ("it_unacked_s", "seconds IT publishes have been outstanding without a PUBACK"),
            ("audit_ok", "1 while audit records are being written"),
            ("it_connected", "1 while connected to the IT broker"),
            ("ot_connected", "1 while connected to the OT broker"),
            ("revoked_devices", "devices whose certificates are all revoked"),
            ("sparkplug_nodes_online", "Sparkplug edge nodes born and not dead"),
        ):
            g = GaugeMetricFamily(p + key, doc, labels=["worker"])
            for worker, s in snaps.items():
                g.add_metric([worker], float(s.get(key, 0)))
            yield g
        lat = GaugeMetricFamily(
            p + "added_latency_seconds_avg",
            "mean time from OT delivery to OT ack",
            labels=["worker"],
        )
        for worker, s in snaps.items():
            count = s.get("latency_count", 0)
            lat.add_metric(
                [worker], (s.get("latency_ms_sum", 0.0) / 1000 / count) if count else 0.0
            )
        yield lat
        broker = CounterMetricFamily(
            p + "broker_refused",
            "publishes the brokers refused (ACL, revocation, rate cap)",
            labels=["broker", "device"],
        )
        for (name, device), n in sorted(status.get("broker_refused", {}).items()):
            broker.add_metric([name, device], float(n))
        yield broker
        dropped = CounterMetricFamily(
            p + "broker_dropped",
            "messages a managed broker dropped because a client queue was full (alarm if > 0)",
            labels=["broker"],
        )
        for name, n in sorted(status.get("broker_dropped", {}).items()):
            dropped.add_metric([name], float(n))
        yield dropped
        restarts = CounterMetricFamily(
            p + "broker_restarts", "managed broker restarts", labels=["broker"]
        )
        for name, n in status.get("broker_restarts", {}).items():
            restarts.add_metric([name], float(n))
        yield restarts
        yield CounterMetricFamily(
            p + "worker_restarts",
            "worker processes restarted",
            value=float(status.get("worker_restarts", 0)),
        )
        yield GaugeMetricFamily(
            p + "workers_alive",
            "worker processes running",
            value=float(status.get("workers_alive", 0)),
        )
        # CRL freshness (ADR 0016): alert well above 0; negative once the CRL is stale.
        crl_left = status.get("crl", {}).get("seconds_to_next_update")
        if crl_left is not None:
            yield GaugeMetricFamily(
                p + "crl_seconds_to_next_update",
                "seconds until the brokers' CRL passes nextUpdate (negative: stale)",
                value=float(crl_left),
            )


class HealthServer:
    def __init__(self, host: str, port: int, snapshots: Snapshots, status: Status) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(snapshots, status))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body = generate_latest(registry)
                    self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
                elif self.path in ("/health", "/healthz"):
                    report = outer.health()
                    code = 200 if report["status"] == "ok" else 503
                    self._send(code, json.dumps(report).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                return

        self._snapshots = snapshots
        self._status = status
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def health(self) -> dict[str, Any]:
        snaps = self._snapshots()
        status = self._status()
        problems = list(status.get("problems", []))
        for worker, s in snaps.items():
            if not s.get("it_connected"):
                problems.append(f"{worker}: IT broker not connected (spooling)")
            if not s.get("ot_connected"):
                problems.append(f"{worker}: OT broker not connected")
            if s.get("spool_full"):
                problems.append(f"{worker}: spool full; OT not acknowledged")
            if s.get("it_stalled"):
                problems.append(
                    f"{worker}: IT broker not acknowledging ({s.get('it_outstanding', 0)} "
                    f"outstanding, no PUBACK for {s.get('it_unacked_s', 0):.0f} s)"
                )
            if s.get("dead_letter_full"):
                problems.append(f"{worker}: dead-letter file full; payloads not kept")
            if not s.get("audit_ok", True):
                problems.append(f"{worker}: audit log unavailable")
        return {
            "status": "ok" if not problems else "degraded",
            "problems": problems,
            "crl": status.get("crl"),
            "workers_alive": status.get("workers_alive", 0),
            "workers": {
                w: {
                    k: s.get(k)
                    for k in ("forwarded", "spool_bytes", "it_connected", "ot_connected", "pid")
                }
                for w, s in snaps.items()
            },
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; also when `start` never ran (an appliance whose
        start failed earlier): ``shutdown`` would then wait forever for a loop that never ran."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
