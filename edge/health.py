"""A machine's health indicator: its vibration level relative to its own commissioning baseline.

The indicator is the natural log of the RMS acceleration over the mean log RMS the machine
showed during its first ``baseline_s`` of service (per axis; the largest axis counts). A ratio
to the machine's own healthy level, not an absolute level, is what transfers between machines,
speeds and loads (ISO 20816-1 section 6.3 sets alarm zones relative to a baseline for the same
reason): a bearing at 1500 rpm and 5000 N and one at 1800 rpm and 4000 N start at different
levels, but both fail when their level has grown several times over.

Per window the tracker gives:

* ``raw``: this window's log ratio (what the alarm levels look at, with persistence);
* ``level``: the median of the last ``smooth_windows`` raw values (impulsive bursts, such as
  the >20 g shocks in PRONOSTIA Bearing1_2, do not move it);
* ``health``: the running maximum of ``level`` as a fraction of the level the training bearings
  failed at (0 = as commissioned, 1 = where bearings ended), so it only rises;
* ``trend_per_h``: the least-squares slope of ``level`` over the last ``trend_windows``, in
  health per hour.

>>> hi = HealthIndicator(HealthSettings(baseline_s=20.0, min_baseline_windows=2), failure_level=1.0)
>>> [hi.update(float(t), (0.0,)) is None for t in (0, 10, 20)]
[True, True, False]
>>> round(hi.update(30.0, (0.7,)).raw, 2)
0.7
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """How the indicator is made; recorded in the model so gateway and training agree."""

    baseline_s: float = 600.0  # the gateway learns the machine's healthy level this long
    # One window is assessed per interval (PRONOSTIA: one snapshot every 10 s), so window
    # counts below mean the same time on a gateway that makes ten windows a second.
    interval_s: float = 10.0
    min_baseline_windows: int = 10
    smooth_windows: int = 30  # median over 30 windows (5 min at one window per 10 s)
    trend_windows: int = 60

    def __post_init__(self) -> None:
        if not self.baseline_s > 0 or self.min_baseline_windows < 1:
            raise ConfigError(
                f"baseline_s must be > 0 and min_baseline_windows >= 1; found "
                f"{self.baseline_s}, {self.min_baseline_windows}"
            )
        if not self.interval_s > 0:
            raise ConfigError(f"interval_s must be > 0; found {self.interval_s}")
        if self.smooth_windows < 1 or self.trend_windows < 2:
            raise ConfigError("smooth_windows must be >= 1 and trend_windows >= 2")


@dataclass(frozen=True, slots=True)
class HealthReading:
    t_s: float  # seconds since the first window (time in service)
    raw: float
    level: float
    health: float
    trend_per_h: float


class HealthIndicator:
    """The indicator of one machine; feed it windows in time order (``t_s`` may be irregular)."""

    def __init__(self, settings: HealthSettings, *, failure_level: float) -> None:
        if not failure_level > 0:
            raise ConfigError(f"failure_level must be > 0; found {failure_level}")
        self.settings = settings
        self.failure_level = failure_level
        self._t0: float | None = None
        self._base_rows: list[tuple[float, ...]] = []
        self._baseline: tuple[float, ...] | None = None
        self._recent: deque[float] = deque(maxlen=settings.smooth_windows)
        self._levels: deque[tuple[float, float]] = deque(maxlen=settings.trend_windows)
        self._peak = 0.0
        self._next_s: float | None = None

    @property
    def baseline(self) -> tuple[float, ...] | None:
        """Mean log RMS per axis over the baseline period; None while it is being learned."""
        return self._baseline

    @property
    def t0_s(self) -> float | None:
        """When the first window came (commissioning)."""
        return self._t0

    @property
    def peak_level(self) -> float:
        """The highest smoothed level so far (log ratio): what `health` is made of."""
        return self._peak

    def restore(self, t0_s: float, baseline: Sequence[float], peak_level: float) -> None:
        """Continue a machine commissioned earlier (`edge.commissioning`): same baseline, same
        age, and the worst level it reached, so a restart neither forgets wear nor re-learns a
        worn machine as healthy."""
        values = tuple(float(v) for v in baseline)
        if not values or not all(math.isfinite(v) for v in (t0_s, peak_level, *values)):
            raise ConfigError("a restored baseline must be finite")
        self._t0, self._baseline, self._peak = t0_s, values, max(0.0, peak_level)
        self._base_rows = []

    def update(self, t_s: float, log_rms: npt.ArrayLike) -> HealthReading | None:
        """One window's log RMS per axis; None while the baseline is still being learned and
        for windows sooner than about ``interval_s`` after the last one taken."""
        values = tuple(float(v) for v in np.asarray(log_rms, dtype=np.float64).ravel())
        if not values or not all(math.isfinite(v) for v in values) or not math.isfinite(t_s):
            raise ConfigError(f"log RMS must be finite values, one per axis; found {values}")
        if self._base_rows and len(values) != len(self._base_rows[0]):
            raise ConfigError(f"the baseline has {len(self._base_rows[0])} axes; found {values}")
        if self._next_s is not None and t_s < self._next_s:
            return None
        self._next_s = t_s + 0.9 * self.settings.interval_s  # tolerate jitter in the spacing
        if self._t0 is None:
            self._t0 = t_s
        elapsed = t_s - self._t0
        if self._baseline is None:
            if elapsed < self.settings.baseline_s or len(self._base_rows) < (
                self.settings.min_baseline_windows
            ):
                self._base_rows.append(values)
                return None
            rows = np.asarray(self._base_rows, dtype=np.float64)
            self._baseline = tuple(float(v) for v in rows.mean(axis=0))
            self._base_rows = []
        if len(values) != len(self._baseline):
            raise ConfigError(
                f"the baseline has {len(self._baseline)} axes; this window has {len(values)}"
            )
        raw = max(v - b for v, b in zip(values, self._baseline, strict=True))
        self._recent.append(raw)
        level = float(np.median(np.fromiter(self._recent, dtype=np.float64)))
        self._peak = max(self._peak, level)
        self._levels.append((elapsed, level))
        return HealthReading(
            t_s=elapsed,
            raw=raw,
            level=level,
            health=self._peak / self.failure_level,
            trend_per_h=_slope_per_h(self._levels) / self.failure_level,
        )


def _slope_per_h(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    arr = np.asarray(points, dtype=np.float64)
    t = arr[:, 0] - arr[:, 0].mean()
    denom = float(np.dot(t, t))
    return float(np.dot(t, arr[:, 1] - arr[:, 1].mean()) / denom) * 3600.0 if denom > 0 else 0.0
