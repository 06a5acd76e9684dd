"""The gateway: readers -> tag context -> featurizer -> local model -> alarm + outbox -> uplink.

>>> # In-process (the demo does this):                                     # doctest: +SKIP
>>> gw = Gateway(config, outbox=Outbox.open(path, config.outbox), scorer=scorer)
>>> await gw.run(stop_event)

Everything upstream goes through the outbox; everything local (alarms, metrics) works without
the uplink. Messages follow docs/contracts.md: envelope ``{"v", "id", "ts", "device", "kind",
"data"}`` under the device's identity path, the id assigned as the message enters the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edge.alarms import AlarmCallback, LocalAlarms
from edge.config import GatewayConfig, VibrationChannel
from edge.errors import ConfigError, EdgeError, OutboxFullError, OutboxStorageError
from edge.featurizer import Featurizer, temperature_slope_per_min
from edge.inference import Scorer
from edge.metrics import GatewayMetrics
from edge.modbus_reader import ModbusReader
from edge.opcua_reader import OpcUaReader
from edge.outbox import Outbox, uuid7
from edge.tagmap import Quality, Reading, TagSpec, describe, iso_ts
from edge.uplink import Uplink

_log = logging.getLogger("idmz.edge.gateway")


class _Channel:
    """Runtime state of one vibration channel."""

    def __init__(self, spec: VibrationChannel, tag: TagSpec) -> None:
        self.spec = spec
        self.tag = tag
        self.featurizer = Featurizer(spec.featurizer)
        self.window_n = round(spec.window_s * spec.featurizer.sample_rate_hz)
        self.blocks: list[npt.NDArray[np.float64]] = []
        self.buffered = 0
        self.window_start_ts: float | None = None
        self.temps: deque[tuple[float, float]] = deque()
        self.in_anomaly = False
        self.last_alarm_ts = 0.0
        self.next_block_ts: float | None = None  # where the next block should start
        self.gaps = 0  # lost or out-of-order blocks: windows restarted


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        outbox: Outbox,
        scorer: Scorer | None = None,
        alarm_callback: AlarmCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.scorer = scorer
        self.clock = clock
        self.alarms = LocalAlarms(config.alarm_log, alarm_callback)
        self.metrics = GatewayMetrics()
        self.uplink = Uplink(config.uplink, outbox, clock=clock) if config.uplink else None
        self.device = config.identity.path
        self._specs = {t.name: t for t in config.tags}
        self._latest: dict[str, Reading] = {}
        self._channels = {ch.tag: _Channel(ch, self._specs[ch.tag]) for ch in config.vibration}
        self._temp_tags = {
            ch.temperature_tag: ch.tag for ch in config.vibration if ch.temperature_tag
        }
        self.opcua_readers = [
            OpcUaReader(s, tuple(t for t in config.tags if t.source == s.name), self.on_reading)
            for s in config.opcua
        ]
        self.modbus_readers = [
            ModbusReader(s, tuple(t for t in config.tags if t.source == s.name), self.on_reading)
            for s in config.modbus
        ]
        self.anomalies = 0
        self.windows = 0
        self.last_features: dict[str, dict[str, object]] = {}
        if scorer is not None:
            missing = [n for n in scorer.feature_names if n not in _known_features()]
            if missing:
                raise ConfigError(f"model {scorer.version} wants unknown features {missing}")
            _check_model_fits(scorer, config)
            self.metrics.model.info(
                {"version": scorer.version, "sha256": scorer.sha256, "signer": scorer.signer}
            )

    # -- messages -----------------------------------------------------------------------

    def publish(
        self, kind: str, data: dict[str, object], *, subtopic: str | None = None
    ) -> str | None:
        """Put one message in the outbox; returns its id (None if the outbox refused it)."""
        now = self.clock()
        msg_id = uuid7(now)
        envelope = {
            "v": 1,
            "id": msg_id,
            "ts": iso_ts(now),
            "device": self.device,
            "kind": kind,
            "data": data,
        }
        topic = f"{self.device}/{subtopic or kind}"
        payload = json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()
        try:
            self.outbox.append(topic, payload, now=now, msg_id=msg_id)
        except OutboxFullError as exc:
            _log.warning("outbox refused a %s message: %s", kind, exc)
            return None
        except OutboxStorageError as exc:  # disk full or failing: keep reading and alarming
            _log.error("could not store a %s message: %s", kind, exc)
            return None
        if self.uplink is not None:
            self.uplink.notify()
        return msg_id

    # -- readings -----------------------------------------------------------------------

    def on_reading(self, reading: Reading) -> None:
        """Sink for every reader (runs on the event loop)."""
        spec = self._specs.get(reading.tag)
        if spec is None:
            return
        if spec.kind == "waveform":
            self._on_block(reading)
            return
        self._latest[reading.tag] = reading
        ch_name = self._temp_tags.get(reading.tag)
        if ch_name and reading.quality is Quality.GOOD and isinstance(reading.value, float):
            ch = self._channels[ch_name]
            ch.temps.append((reading.source_ts, reading.value))
            while ch.temps and ch.temps[0][0] < reading.source_ts - ch.spec.temperature_window_s:
                ch.temps.popleft()

    def _on_block(self, reading: Reading) -> None:
        ch = self._channels.get(reading.tag)
        if ch is None:
            return
        if reading.quality is not Quality.GOOD or not isinstance(reading.value, np.ndarray):
            ch.blocks, ch.buffered, ch.window_start_ts = [], 0, None  # a gap: start over
            ch.next_block_ts = None
            return
        block = reading.value
        # Block timestamps are the first sample's acquisition time. A block that does not start
        # where the previous one ended (a lost block, a server restart) would splice two
        # stretches of signal into one window and fake impacts: start the window over.
        block_s = block.size / ch.spec.featurizer.sample_rate_hz
        expected = ch.next_block_ts
        ch.next_block_ts = reading.source_ts + block_s
        if expected is not None and abs(reading.source_ts - expected) > block_s / 2:
            ch.gaps += 1
            ch.blocks, ch.buffered, ch.window_start_ts = [], 0, None
        if ch.window_start_ts is None:
            ch.window_start_ts = reading.source_ts
        ch.blocks.append(block)
        ch.buffered += block.size
        while ch.buffered >= ch.window_n:
            data = np.concatenate(ch.blocks)
            window, rest = data[: ch.window_n], data[ch.window_n :]
            start_ts = ch.window_start_ts if ch.window_start_ts is not None else reading.source_ts
            ch.blocks = [rest] if rest.size else []
            ch.buffered = rest.size
            fs = ch.spec.featurizer.sample_rate_hz
            used = block.size - rest.size  # samples of this block that went into the window
            ch.window_start_ts = reading.source_ts + used / fs if rest.size else None
            try:
                self._score_window(ch, window, start_ts)
            except EdgeError:
                _log.exception("vibration window of %s could not be scored", ch.tag.name)

    def _shaft_hz(self, ch: _Channel) -> float:
        spec = ch.spec
        if spec.shaft_speed_tag:
            r = self._latest.get(spec.shaft_speed_tag)
            if (
                r is not None
                and r.quality is Quality.GOOD
                and isinstance(r.value, float)
                and r.value > 0
            ):
                return r.value / 60.0
        if spec.shaft_rpm:
            return spec.shaft_rpm / 60.0
        raise ConfigError(f"{ch.tag.name}: no shaft speed (tag bad and no shaft_rpm)")

    def _score_window(self, ch: _Channel, window: npt.NDArray[np.float64], start_ts: float) -> None:
        shaft_hz = self._shaft_hz(ch)
        feats = ch.featurizer.features(window, shaft_hz)
        temps = list(ch.temps)
        slope = temperature_slope_per_min([t for t, _ in temps], [v for _, v in temps])
        self.windows += 1
        self.metrics.windows.labels(ch.tag.asset).inc()
        data: dict[str, object] = {
            "asset": ch.tag.asset,
            "path": ch.tag.asset_path,
            "tag": ch.tag.name,
            "window_start": iso_ts(start_ts),
            "window_s": ch.spec.window_s,
            "shaft_hz": round(shaft_hz, 3),
            "iso_zone": ch.featurizer.iso_zone(feats["velocity_rms_mm_s"]),
            "temperature_slope_c_per_min": round(slope, 4),
            "features": {k: round(v, 6) for k, v in feats.items()},
        }
        if self.scorer is not None:
            vec = ch.featurizer.feature_vector(feats, self.scorer.feature_names)
            score = float(self.scorer.score(vec)[0])
            data.update(
                score=score, threshold=self.scorer.threshold, model_version=self.scorer.version
            )
            self.metrics.score.labels(ch.tag.asset).set(score)
            self._check_anomaly(ch, score, feats, data)
        self.last_features[ch.tag.name] = data
        self.publish("features", data)

    def _check_anomaly(
        self, ch: _Channel, score: float, feats: dict[str, float], data: dict[str, object]
    ) -> None:
        if self.scorer is None:
            raise EdgeError("anomaly check without a loaded model")
        now = self.clock()
        if score <= self.scorer.threshold:
            ch.in_anomaly = False
            return
        if ch.in_anomaly and now - ch.last_alarm_ts < ch.spec.realarm_interval_s:
            return
        ch.in_anomaly, ch.last_alarm_ts = True, now
        self.anomalies += 1
        self.metrics.anomalies.labels(ch.tag.asset).inc()
        event: dict[str, object] = {
            "asset": ch.tag.asset,
            "path": ch.tag.asset_path,
            "tag": ch.tag.name,
            "score": score,
            "threshold": self.scorer.threshold,
            "model_version": self.scorer.version,
            "window_start": data["window_start"],
            "iso_zone": data["iso_zone"],
            "features": {n: round(feats[n], 6) for n in self.scorer.feature_names},
        }
        self.alarms.raise_alarm(event)  # local first: works with the uplink down
        self.publish("anomaly", event, subtopic="events/anomaly")

    # -- periodic -----------------------------------------------------------------------

    def telemetry(self) -> dict[str, object]:
        now = self.clock()
        out = []
        for spec in self.config.tags:
            if spec.kind != "scalar":
                continue
            r = self._latest.get(spec.name)
            if r is None:
                r = Reading(spec.name, None, Quality.BAD, now, "no value yet")
            elif r.quality is Quality.GOOD and now - r.source_ts > self.config.stale_after_s:
                r = Reading(r.tag, r.value, Quality.UNCERTAIN, r.source_ts, "stale")
            out.append(describe(spec, r))
        self.metrics.tag_bad.set(sum(1 for t in out if t["quality"] == "bad"))
        return {"tags": out}

    def status(self) -> dict[str, object]:
        now = self.clock()
        ob = self.outbox.stats(now=now)
        readers: dict[str, object] = {}
        for r in self.opcua_readers:
            readers[r.source.name] = {
                "kind": "opcua",
                "connected": r.connected,
                "sessions": r.sessions,
                "failed_tags": dict(r.failed_tags),
            }
        for m in self.modbus_readers:
            readers[m.source.name] = {"kind": "modbus", "connected": m.connected}
        s = self.scorer
        return {
            "model": {"version": s.version, "sha256": s.sha256, "signer": s.signer} if s else None,
            "outbox": {
                "depth": ob.depth,
                "bytes": ob.bytes,
                "oldest_age_s": round(ob.oldest_age_s, 3),
                "dropped": ob.dropped,
            },
            "readers": readers,
            "uplink": {
                "connected": self.uplink.stats.connected,
                "connections": self.uplink.stats.connections,
                "last_error": self.uplink.stats.last_error,
            }
            if self.uplink
            else None,
            "windows": self.windows,
            "vibration_gaps": sum(ch.gaps for ch in self._channels.values()),
            "anomalies": self.anomalies,
        }

    def _update_metrics(self) -> None:
        self.metrics.update_outbox(self.outbox.stats(now=self.clock()))
        for r in self.opcua_readers:
            self.metrics.reader_up.labels(r.source.name).set(1 if r.connected else 0)
        for m in self.modbus_readers:
            self.metrics.reader_up.labels(m.source.name).set(1 if m.connected else 0)
        if self.uplink is not None:
            self.metrics.uplink_connected.set(1 if self.uplink.stats.connected else 0)
            self.metrics.uplink_acked.set(self.uplink.stats.acked)

    async def _every(self, interval_s: float, stop: asyncio.Event, fn: Callable[[], None]) -> None:
        while not stop.is_set():
            try:
                fn()
            except EdgeError:
                _log.exception("periodic task failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set. Starts the metrics endpoint if a port is configured."""
        c = self.config
        if c.metrics_port is not None:
            port = self.metrics.serve(c.metrics_port, c.metrics_host)
            _log.info("metrics on http://%s:%d/metrics (loopback only)", c.metrics_host, port)
        tasks = [
            asyncio.create_task(r.run(stop), name=f"opcua-{r.source.name}")
            for r in self.opcua_readers
        ]
        tasks += [
            asyncio.create_task(m.run(stop), name=f"modbus-{m.source.name}")
            for m in self.modbus_readers
        ]
        if self.uplink is not None:
            tasks.append(asyncio.create_task(self.uplink.run(stop), name="uplink"))
        tasks.append(
            asyncio.create_task(
                self._every(c.telemetry_interval_s, stop, lambda: self._publish_telemetry()),
                name="telemetry",
            )
        )
        tasks.append(
            asyncio.create_task(
                self._every(c.status_interval_s, stop, lambda: self._publish_status()),
                name="status",
            )
        )
        tasks.append(
            asyncio.create_task(self._every(1.0, stop, self._update_metrics), name="metrics")
        )
        tasks.append(
            asyncio.create_task(
                self._every(60.0, stop, lambda: self._expire()), name="outbox-expiry"
            )
        )
        try:
            await stop.wait()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.metrics.close()

    def _publish_telemetry(self) -> None:
        self.publish("telemetry", self.telemetry())

    def _publish_status(self) -> None:
        self.publish("status", self.status())

    def _expire(self) -> None:
        n = self.outbox.expire(now=self.clock())
        if n:
            _log.warning("outbox: %d messages expired undelivered (ttl_s)", n)


def _check_model_fits(scorer: Scorer, config: GatewayConfig) -> None:
    """A model scores windows like the ones it was fitted on: same length, same sample rate."""
    summary = scorer.training_summary
    for ch in config.vibration:
        for key, have in (
            ("window_s", ch.window_s),
            ("sample_rate_hz", ch.featurizer.sample_rate_hz),
        ):
            want = summary.get(key)
            if isinstance(want, int | float) and abs(float(want) - have) > 1e-9:
                raise ConfigError(
                    f"model {scorer.version} was fitted on {key} = {want}; vibration channel "
                    f"{ch.tag} has {key} = {have}"
                )


def _known_features() -> set[str]:
    from edge.featurizer import FEATURE_NAMES

    return {*FEATURE_NAMES, "rms", "peak", "kurtosis", "velocity_rms_mm_s"}
