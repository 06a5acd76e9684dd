"""Prognostics for one machine: health indicator, alarm level and remaining useful life together.

A `Prognostics` is what `idmz model train --run-to-failure` fits and stores in the signed ONNX
model's metadata (``idmz.prognostics``, JSON), so a gateway runs exactly what was signed. A
`PrognosticsTracker` is one machine's running state on the gateway: feed it each window's log
RMS per axis with the window's time, get an `Assessment` for the features/anomaly messages.

>>> import math
>>> p = fit_prognostics([(np.arange(100) * 10.0, np.r_[np.zeros(80), np.linspace(0, 2, 20)])],
...                     health=HealthSettings(baseline_s=100.0))
>>> tr = p.tracker()
>>> [tr.update(t, (0.0,)).alarm.value for t in (0.0, 500.0)]
['none', 'none']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from edge.alarm_levels import AlarmLevel, AlarmLevels, AlarmState
from edge.errors import ConfigError
from edge.health import HealthIndicator, HealthReading, HealthSettings
from edge.rul import (
    FACTOR_BOUNDS,
    OperatingCondition,
    RulEstimate,
    RulHistory,
    RulModel,
    RunHistory,
)
from edge.rul_fit import fit_rul

_log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
META_KEY = "prognostics"
FORMAT = "idmz-prognostics/v5"  # v5: several configurations combined (ADR 0139, amended)
# v4 (ADR 0139's life prior around each training life) reads as v5 with one configuration; v3
# (ADR 0138's point, band and conditions) and v2 (ADR 0069) also with one log-normal prior over
# the lives, and v2 without the point, band and conditions too. A v4 reader would ignore the
# members and estimate differently, so v5 is refused by gateways older than it.
READABLE = (FORMAT, "idmz-prognostics/v4", "idmz-prognostics/v3", "idmz-prognostics/v2")


@dataclass(frozen=True, slots=True)
class Assessment:
    health: HealthReading | None  # None while the baseline is being learned
    alarm: AlarmLevel
    rul: RulEstimate | None

    def fields(self) -> dict[str, object]:
        """What the features and anomaly messages carry (None until it exists)."""
        h, r = self.health, self.rul
        return {
            "health": round(h.health, 4) if h else None,
            "health_trend_per_h": round(h.trend_per_h, 4) if h else None,
            "alarm": self.alarm.value,
            "rul_s": round(r.rul_s, 1) if r else None,
            "rul_low_s": round(r.rul_low_s, 1) if r else None,
            "rul_high_s": round(r.rul_high_s, 1) if r else None,
        }


@dataclass(frozen=True)
class Prognostics:
    health: HealthSettings
    alarms: AlarmLevels
    failure_level: float  # log ratio the training bearings ended at (health 1.0)
    rul: RulModel
    summary: Mapping[str, object]

    def tracker(self, condition: OperatingCondition | None = None) -> PrognosticsTracker:
        """One machine's tracker; ``condition`` (its speed and load) rescales the life prior."""
        return PrognosticsTracker(self, condition)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "health": asdict(self.health),
                "alarms": asdict(self.alarms),
                "failure_level": self.failure_level,
                "rul": self.rul.to_json(),
                "summary": dict(self.summary),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Prognostics:
        try:
            data = json.loads(text)
            if data.get("format") not in READABLE:
                raise ConfigError(f"prognostics format {data.get('format')!r}; want {FORMAT!r}")
            return cls(
                health=HealthSettings(**data["health"]),
                alarms=AlarmLevels(**data["alarms"]),
                failure_level=float(data["failure_level"]),
                rul=RulModel.from_json(data["rul"]),
                summary=dict(data.get("summary", {})),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"malformed prognostics metadata: {exc!r}") from exc


class PrognosticsTracker:
    def __init__(
        self, prognostics: Prognostics, condition: OperatingCondition | None = None
    ) -> None:
        self.prognostics = prognostics
        self.condition = _usable(prognostics.rul, condition)
        self.rul_errors = 0  # windows whose RUL could not be estimated (published as null)
        self.indicator = HealthIndicator(
            prognostics.health, failure_level=prognostics.failure_level
        )
        self.alarm = AlarmState(prognostics.alarms)
        # Health at commissioning is 0 by definition; a machine restored after a restart (its
        # history is not kept) is seen as having risen evenly from there to its worst level.
        self.history = RulHistory()
        self.history.add(0.0, 0.0)
        self.last = Assessment(None, AlarmLevel.NONE, None)

    def update(self, t_s: float, log_rms: npt.ArrayLike) -> Assessment:
        """Assess one window (a window the indicator skips returns the last assessment)."""
        reading = self.indicator.update(t_s, log_rms)
        if reading is None:
            return self.last
        level = self.alarm.update(reading.raw)
        self.history.add(reading.t_s, reading.health)
        try:
            estimate = self.prognostics.rul.estimate(reading.t_s, self.history, self.condition)
        except Exception:  # noqa: BLE001 - the health and alarm level of the window still count
            self.rul_errors += 1
            if self.rul_errors == 1 or self.rul_errors % 1000 == 0:
                _log.exception("RUL estimate failed (%d times); published as null", self.rul_errors)
            estimate = None
        self.last = Assessment(reading, level, estimate)
        return self.last


def _usable(rul: RulModel, condition: OperatingCondition | None) -> OperatingCondition | None:
    """``condition`` if the training lives may be rescaled to it; None (the lives as they are,
    ADR 0069) with a warning when a factor falls outside `edge.rul.FACTOR_BOUNDS`."""
    if condition is None or rul.conditions is None or rul.life_factors(condition) is not None:
        return condition
    factors = sorted({round(c.life_factor(condition), 3) for c in rul.conditions})
    _log.warning(
        "operating condition %g rpm, %g N is too far from the training runs' (%s): ISO 281 "
        "would rescale their lives by %s, outside %s; using the lives unscaled",
        condition.shaft_rpm,
        condition.load_n,
        ", ".join(sorted({f"{c.shaft_rpm:g} rpm {c.load_n:g} N" for c in rul.conditions})),
        ", ".join(f"{f:g}" for f in factors),
        list(FACTOR_BOUNDS),
    )
    return None


def health_levels(
    t_s: npt.ArrayLike, log_rms: npt.ArrayLike, settings: HealthSettings
) -> list[HealthReading]:
    """The indicator's readings over one run, after its baseline, in log-ratio units."""
    times, rows = _rows(t_s, log_rms)
    hi = HealthIndicator(settings, failure_level=1.0)
    readings = (hi.update(float(t), row) for t, row in zip(times, rows, strict=True))
    return [r for r in readings if r is not None]


def fit_prognostics(
    runs: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    *,
    health: HealthSettings | None = None,
    alarms: AlarmLevels | None = None,
    summary: Mapping[str, object] | None = None,
    conditions: Sequence[OperatingCondition | None] | None = None,
) -> Prognostics:
    """Fit on whole run-to-failure runs: (times of the windows, log RMS per window and axis),
    and each run's operating condition when known.

    Each run ends at its failure. The failure level is the median over runs of the highest
    smoothed level each reached; health is the running peak over it; the RUL model keeps each
    run's health over its life fraction and the runs' lives (`edge.rul`).
    """
    health = health or HealthSettings()
    traces = []
    for t_s, log_rms in runs:
        readings = health_levels(t_s, log_rms, health)
        if len(readings) < 2:
            raise ConfigError("a run-to-failure run is shorter than its baseline")
        times, _ = _rows(t_s, log_rms)
        traces.append((readings, float(times[-1] - times[0])))
    failure_level = float(np.median([rs[-1].health for rs, _ in traces]))  # the peak level
    if not failure_level > 0:
        raise ConfigError("the runs never rose above their baseline: not run-to-failure data")
    histories = [
        RunHistory(
            [r.t_s for r in rs],
            [r.health / failure_level for r in rs],
            end,
        )
        for rs, end in traces
    ]
    info = {
        "runs": len(runs),
        "failure_level": round(failure_level, 4),
        "lives_s": [round(h.end_s, 1) for h in histories],
        **(dict(summary) if summary else {}),
    }
    rul = fit_rul(histories, conditions=conditions)
    return Prognostics(health, alarms or AlarmLevels(), failure_level, rul, info)


def assess_run(
    prognostics: Prognostics,
    t_s: npt.ArrayLike,
    log_rms: npt.ArrayLike,
    condition: OperatingCondition | None = None,
) -> list[Assessment]:
    """Replay a whole recording through one tracker, as a gateway would see it window by window."""
    times, rows = _rows(t_s, log_rms)
    tracker = prognostics.tracker(condition)
    return [tracker.update(float(t), row) for t, row in zip(times, rows, strict=True)]


def _rows(t_s: npt.ArrayLike, log_rms: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Times [n] and log RMS [n, axes] (a 1-D log RMS is one axis)."""
    times = np.asarray(t_s, dtype=np.float64).ravel()
    rows = np.asarray(log_rms, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[:, None]
    if rows.ndim != 2 or rows.shape[0] != times.size or times.size == 0:
        raise ConfigError(f"need one log RMS row per time; found {rows.shape} and {times.shape}")
    return times, rows
