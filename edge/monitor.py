"""One vibration channel, window by window: features, model score, prognostics, anomaly events.

A `ChannelMonitor` owns a channel's running state: its `Windower`, featurizer, the machine's
prognostics (health, alarm level, RUL; restored from and kept in its commissioning record) and
its `AnomalyTracker`. `assess` turns one window into the bodies of the messages it causes: the
features message always, an anomaly event when `edge.anomaly` says so. It publishes nothing:
the gateway decides where the bodies go (outbox, local alarm).

>>> monitor = ChannelMonitor(channel, tag, scorer, state_dir=None)           # doctest: +SKIP
>>> for window in monitor.windower.push(block, ts):                           # doctest: +SKIP
...     report = monitor.assess(window, shaft_hz=29.95, slope_c_per_min=0.0, now=time.time())
...     report.features["score"], report.anomaly
(0.41, None)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.anomaly import AnomalyTracker
from edge.commissioning import CommissioningKeeper, record_path
from edge.config import VibrationChannel
from edge.errors import ConfigError
from edge.featurizer import FEATURE_NAMES, Featurizer
from edge.inference import Scorer
from edge.prognostics import Assessment, PrognosticsTracker
from edge.tagmap import TagSpec, iso_ts
from edge.windowing import Window, Windower

_log = logging.getLogger(__name__)

# What a model may ask for: the featurizer's features and the raw ones it computes on the way.
KNOWN_FEATURES = frozenset({*FEATURE_NAMES, "rms", "peak", "kurtosis", "velocity_rms_mm_s"})


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What one window produced: the features message's body, its score if a model is
    loaded, and the anomaly event's body when one is raised."""

    features: dict[str, object]
    score: float | None = None
    anomaly: dict[str, object] | None = None
    prognosis_failed: bool = False  # its health, alarm level or RUL could not be assessed


def check_model(scorer: Scorer, channels: Sequence[VibrationChannel]) -> None:
    """A model scores features the featurizer makes, on windows like the ones it was fitted on:
    same length, same sample rate. Raises `ConfigError` otherwise (the gateway does not start)."""
    missing = [n for n in scorer.feature_names if n not in KNOWN_FEATURES]
    if missing:
        raise ConfigError(f"model {scorer.version} wants unknown features {missing}")
    summary = scorer.training_summary
    for ch in channels:
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


class ChannelMonitor:
    def __init__(
        self,
        spec: VibrationChannel,
        tag: TagSpec,
        scorer: Scorer | None,
        *,
        state_dir: Path | None,
    ) -> None:
        self.spec = spec
        self.tag = tag
        self.scorer = scorer
        self.featurizer = Featurizer(spec.featurizer)
        fs = spec.featurizer.sample_rate_hz
        self.windower = Windower(round(spec.window_s * fs), fs)
        self.anomaly = AnomalyTracker(scorer.threshold, spec.realarm_interval_s) if scorer else None
        # Health, alarm level and RUL of the machine (a model with prognostics only); its
        # baseline is learned from the first windows after the gateway starts (commissioning)
        # and kept in the state directory across restarts.
        self.prognosis: PrognosticsTracker | None = None
        self.commissioning: CommissioningKeeper | None = None
        self.prognosis_errors = 0  # windows scored without (all of) their prognosis
        if scorer is not None and scorer.prognostics is not None:
            self.prognosis = scorer.prognostics.tracker(spec.condition)
            if state_dir is not None:  # an unreadable record refuses the start
                keeper = CommissioningKeeper(record_path(state_dir, tag.name))
                keeper.restore(self.prognosis.indicator)
                self.commissioning = keeper

    def assess(
        self, window: Window, *, shaft_hz: float, slope_c_per_min: float, now: float
    ) -> WindowReport:
        """Featurize and score one window; ``now`` (POSIX s) times the re-alarm interval."""
        feats = self.featurizer.features(window.samples, shaft_hz)
        data: dict[str, object] = {
            "asset": self.tag.asset,
            "path": self.tag.asset_path,
            "tag": self.tag.name,
            "window_start": iso_ts(window.start_ts),
            "window_s": self.spec.window_s,
            "shaft_hz": round(shaft_hz, 3),
            "iso_zone": self.featurizer.iso_zone(feats["velocity_rms_mm_s"]),
            "temperature_slope_c_per_min": round(slope_c_per_min, 4),
            "features": {k: round(v, 6) for k, v in feats.items()},
        }
        scorer, tracker = self.scorer, self.anomaly
        if scorer is None or tracker is None:
            return WindowReport(data)
        vec = self.featurizer.feature_vector(feats, scorer.feature_names)
        score = float(scorer.score(vec)[0])
        data.update(score=score, threshold=scorer.threshold, model_version=scorer.version)
        failed, prognosis_fields = False, dict[str, object]()
        if self.prognosis is None:
            verdict = tracker.observe(score, now)
        else:
            before = self.prognosis.last.alarm
            assessment, failed = self._prognosis(self.prognosis, window.start_ts, feats["log_rms"])
            prognosis_fields = assessment.fields()
            data.update(prognosis_fields)
            verdict = tracker.observe(score, now, before=before, after=assessment.alarm)
        if not verdict.found:
            return WindowReport(data, score, prognosis_failed=failed)
        event: dict[str, object] = {
            "asset": self.tag.asset,
            "path": self.tag.asset_path,
            "tag": self.tag.name,
            "score": score,
            "threshold": scorer.threshold,
            "model_version": scorer.version,
            "window_start": data["window_start"],
            "iso_zone": data["iso_zone"],
            "features": {n: round(feats[n], 6) for n in scorer.feature_names},
        }
        if self.prognosis is not None:
            event.update(prognosis_fields, reasons=list(verdict.reasons))
        return WindowReport(data, score, event, failed)

    def _prognosis(
        self, prognosis: PrognosticsTracker, start_ts: float, log_rms: float
    ) -> tuple[Assessment, bool]:
        """This window's assessment, and whether any of it failed. A failure never costs the
        window its score or anomaly event: its prognosis is published as null (the alarm
        level stays where it was) and counted."""
        rul_errors = prognosis.rul_errors
        try:
            assessment = prognosis.update(start_ts, (log_rms,))
        except Exception:  # noqa: BLE001 - the score and the anomaly alarm come first
            self.prognosis_errors += 1
            if self.prognosis_errors == 1 or self.prognosis_errors % 1000 == 0:
                _log.exception(
                    "prognosis of %s failed (%d windows); published as null",
                    self.tag.name,
                    self.prognosis_errors,
                )
            return Assessment(None, prognosis.last.alarm, None), True
        if self.commissioning is not None:
            self.commissioning.keep(prognosis.indicator)
        failed = prognosis.rul_errors > rul_errors
        self.prognosis_errors += failed
        return assessment, failed
