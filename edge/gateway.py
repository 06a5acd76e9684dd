"""The gateway: readers -> tag context -> channel monitors -> local alarm + outbox -> uplink.

In-process (`idmz.gateway_runtime.build_gateway` builds it with the real readers and uplink)::

    gw = Gateway(config, outbox=Outbox.open(path, config.outbox), scorer=scorer,
                 readers=lambda sink: [OpcUaReader(source, tags, sink)], uplink=uplink)
    await gw.run(stop_event)          # until stop_event is set

Wiring and routing only; each job has its module: `edge.context` (the scalar tags' latest
values), `edge.windowing` (blocks into windows, gaps), `edge.monitor` (features, score,
prognostics, with `edge.anomaly` deciding events), `edge.publisher` and `edge.envelope` (the
outbox message), `edge.status` (status message, gauges), `edge.schedule` (tasks). Everything
upstream goes through the outbox; everything local (alarms, metrics) works without the uplink.
Without readers or an uplink the gateway still routes what `on_reading` is given: its logic
runs, and is tested, without a network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping

import numpy as np

from edge.alarms import AlarmCallback, LocalAlarms
from edge.config import GatewayConfig
from edge.context import TagContext
from edge.errors import EdgeError
from edge.inference import Scorer
from edge.metrics import GatewayMetrics
from edge.monitor import ChannelMonitor, check_model
from edge.outbox import Outbox
from edge.ports import ReaderFactory, UplinkPort
from edge.publisher import Publisher
from edge.schedule import Periodic, Schedule, Service
from edge.status import GatewayCounts, StatusReport
from edge.tagmap import Quality, Reading, TagSpec
from edge.windowing import Window

_log = logging.getLogger("idmz.edge.gateway")

METRICS_INTERVAL_S = 1.0
EXPIRY_INTERVAL_S = 60.0


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        outbox: Outbox,
        scorer: Scorer | None = None,
        readers: ReaderFactory | None = None,
        uplink: UplinkPort | None = None,
        alarm_callback: AlarmCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.scorer = scorer
        self.clock = clock
        self.uplink = uplink
        self.device = config.identity.path
        self.alarms = LocalAlarms(config.alarm_log, alarm_callback)
        self.metrics = GatewayMetrics()
        self.publisher = Publisher(
            self.device, outbox, clock=clock, on_stored=uplink.notify if uplink else None
        )
        self.context = TagContext(config.tags, config.vibration)
        self._specs: dict[str, TagSpec] = {t.name: t for t in config.tags}
        if scorer is not None:
            check_model(scorer, config.vibration)
        self.monitors = {
            ch.tag: ChannelMonitor(ch, self._specs[ch.tag], scorer, state_dir=config.state_dir)
            for ch in config.vibration
        }
        if scorer is not None:
            self.metrics.model.info(
                {"version": scorer.version, "sha256": scorer.sha256, "signer": scorer.signer}
            )
        self.readers = tuple(readers(self.on_reading)) if readers is not None else ()
        self.report = StatusReport(outbox, self.readers, uplink, scorer, self.metrics, clock=clock)
        self.anomalies = 0
        self.windows = 0
        self.last_features: dict[str, dict[str, object]] = {}
        # Added by the composition root (the release updates, ADR 0100): more services, and
        # more sections of the status message.
        self.services: list[Service] = []
        self.status_sections: dict[str, Callable[[], object]] = {}

    def use_scorer(self, scorer: Scorer) -> None:
        """Put another verified model in service (called on the event loop, so between two
        windows): each channel starts its next window with it; its prognostics baseline is
        the channel's commissioning record, as at a start."""
        check_model(scorer, self.config.vibration)
        self.monitors = {
            ch.tag: ChannelMonitor(ch, self._specs[ch.tag], scorer, state_dir=self.config.state_dir)
            for ch in self.config.vibration
        }
        self.scorer = self.report.scorer = scorer
        self.metrics.model.info(
            {"version": scorer.version, "sha256": scorer.sha256, "signer": scorer.signer}
        )

    def apply_settings(self, changes: Mapping[str, float]) -> None:
        """Change live settings (`edge.activation.LIVE_KEYS`); the periodic jobs read their
        interval at every turn."""
        self.config = dataclasses.replace(self.config, **changes)  # type: ignore[arg-type]

    def publish(
        self, kind: str, data: dict[str, object], *, subtopic: str | None = None
    ) -> str | None:
        """Put one message in the outbox; returns its id (None if the outbox refused it)."""
        return self.publisher.publish(kind, data, subtopic=subtopic)

    # -- readings -----------------------------------------------------------------------

    def on_reading(self, reading: Reading) -> None:
        """Sink for every reader (runs on the event loop)."""
        spec = self._specs.get(reading.tag)
        if spec is None:
            return
        if spec.kind != "waveform":
            self.context.update(reading)
            return
        monitor = self.monitors.get(reading.tag)
        if monitor is None:
            return
        if reading.quality is not Quality.GOOD or not isinstance(reading.value, np.ndarray):
            monitor.windower.reset()  # a gap: start over
            return
        for window in monitor.windower.push(reading.value, reading.source_ts):
            try:
                self._on_window(monitor, window)
            except EdgeError:
                _log.exception("vibration window of %s could not be scored", monitor.tag.name)

    def _on_window(self, monitor: ChannelMonitor, window: Window) -> None:
        ch = monitor.spec
        report = monitor.assess(
            window,
            shaft_hz=self.context.shaft_hz(ch),
            slope_c_per_min=self.context.temperature_slope_per_min(ch),
            now=self.clock(),
        )
        asset = monitor.tag.asset
        self.windows += 1
        self.metrics.windows.labels(asset).inc()
        if report.score is not None:
            self.metrics.score.labels(asset).set(report.score)
        if report.prognosis_failed:
            self.metrics.prognosis_errors.labels(asset).inc()
        if report.anomaly is not None:
            self.anomalies += 1
            self.metrics.anomalies.labels(asset).inc()
            self.alarms.raise_alarm(report.anomaly)  # local first: works with the uplink down
            self.publish("anomaly", report.anomaly, subtopic="events/anomaly")
        self.last_features[monitor.tag.name] = report.features
        self.publish("features", report.features)

    # -- periodic -----------------------------------------------------------------------

    def telemetry(self) -> dict[str, object]:
        tags = self.context.telemetry(self.clock(), self.config.stale_after_s)
        self.metrics.tag_bad.set(sum(1 for t in tags if t["quality"] == "bad"))
        return {"tags": tags}

    def status(self) -> dict[str, object]:
        gaps = sum(m.windower.gaps for m in self.monitors.values())
        body = self.report.status(GatewayCounts(self.windows, gaps, self.anomalies))
        body.update({name: section() for name, section in self.status_sections.items()})
        return body

    def schedule(self) -> Schedule:
        """The readers and the uplink, and the periodic jobs, as `run` starts them."""
        c = self.config
        services = [Service(f"reader-{r.name}", r.run) for r in self.readers]
        if self.uplink is not None:
            services.append(Service("uplink", self.uplink.run))
        services += self.services
        return Schedule(
            services,
            [
                Periodic(
                    "telemetry",
                    c.telemetry_interval_s,
                    self._publish_telemetry,
                    every=lambda: self.config.telemetry_interval_s,
                ),
                Periodic(
                    "status",
                    c.status_interval_s,
                    self._publish_status,
                    every=lambda: self.config.status_interval_s,
                ),
                Periodic("metrics", METRICS_INTERVAL_S, self.report.update_metrics),
                Periodic("outbox-expiry", EXPIRY_INTERVAL_S, self._expire),
            ],
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set. Starts the metrics endpoint if a port is configured."""
        c = self.config
        if c.metrics_port is not None:
            port = self.metrics.serve(c.metrics_port, c.metrics_host)
            _log.info("metrics on http://%s:%d/metrics (loopback only)", c.metrics_host, port)
        try:
            await self.schedule().run(stop)
        finally:
            self.metrics.close()

    def _publish_telemetry(self) -> None:
        self.publish("telemetry", self.telemetry())

    def _publish_status(self) -> None:
        self.publish("status", self.status())

    def _expire(self) -> None:
        n = self.outbox.expire(now=self.clock())
        if n:
            _log.warning("outbox: %d messages expired undelivered (ttl_s)", n)
