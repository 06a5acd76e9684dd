"""Remaining useful life from the health indicator's trajectory, fitted on run-to-failure runs.

A Bayesian estimate of where in its life the machine is, from two things the training runs
teach (ADR 0069):

* **How long bearings live** (prior): a log-normal over the training runs' lives (the spread of
  bearing lives is the reason ISO 281 speaks of an L10 life, not one life). A machine that is
  ``age_s`` old has survived that long, so only lives longer than its age remain possible.
* **How health rises through a life** (likelihood): each training run's health as a function of
  its **life fraction** (time / its life), kept in the model on a grid of ``GRID`` points. For a
  candidate life fraction ``u`` now, the machine's own health history (time ``s`` since
  commissioning, ``s / age * u`` of its life) is compared with each training run's curve; the
  likelihood is ``exp(-mean squared difference / (2 sigma^2))``. A machine whose health still
  sits at its baseline is early in a life like the training runs'; one whose health climbed the
  way theirs did in their last minutes is near its end.

The posterior over (training run, life fraction) gives a distribution of the remaining life
``age * (1 - u) / u``:

* ``rul_s``: one of its low quantiles (a late estimate costs more than an early one under the
  PHM 2012 score, so it sits below the median), or the value with the best expected score;
* ``rul_low_s``, ``rul_high_s``: a pair of its quantiles (the band);
* ``fraction``: the posterior median of the life fraction used so far.

Chosen at fit time by leave-one-run-out **within the training runs** (never on a run being
evaluated), at cut points every 5 % of 10-95 % of life: ``sigma`` (how closely a trajectory
must follow a training run's), how much the life prior counts, which statistic is the point
(ADR 0138), and the band: the posterior's 5-95 % quantiles, or the narrowest wider pair of a
fixed ladder that held the truth at 90 % of those cuts when 5-95 % did not.

**Operating condition (ADR 0138).** When the training runs and the machine each say their shaft
speed and radial load, the training lives are rescaled to the machine's condition before they
make the prior, by the basic rating life of ISO 281 (life in hours ~ (C / P)^3 / n for ball
bearings): a bearing loaded 25 % harder lives about half as long. The exponent is the
standard's, not fitted.

>>> runs = [RunHistory(np.arange(0, 101.0), np.r_[np.zeros(80), np.linspace(0, 1, 21)], 100.0)]
>>> m = fit_rul(runs * 2)
>>> history = RulHistory()
>>> for t in range(0, 51):
...     history.add(float(t), 0.0)
>>> e = m.estimate(50.0, history)
>>> e.rul_low_s <= e.rul_s <= e.rul_high_s and 0.2 < e.fraction < 0.8
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
GRID = 101  # points per training curve, over life fractions 0..1
FRACTIONS: FloatArray = np.linspace(0.01, 0.995, 240)  # candidate life fractions now
HISTORY_POINTS = 128  # a machine's health history is kept at most this long (decimated)
MATCH_POINTS = 60  # history points compared per estimate
DEFAULT_SIGMAS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 10.0)  # 10: ignore the trajectory
DEFAULT_PRIOR_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
DEFAULT_SIGMA = 0.2  # with fewer than three training runs there is nothing to choose it on
MIN_LOG_SPREAD = 0.3  # the life prior is never narrower than this (a few runs can agree)
DEFAULT_CUTS: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(18))  # .1-.95
# The point: a quantile of the remaining life, or None: the best expected PHM 2012 score.
POINT_QUANTILES: tuple[float | None, ...] = (None, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
# The band: the posterior's 5-95 % quantiles, widened when the inner runs show it held the truth
# less often than 90 % (never narrowed: a few runs that agree are no reason for more confidence).
BANDS: tuple[tuple[float, float], ...] = tuple(
    (a, round(1.0 - a, 3)) for a in (0.05, 0.025, 0.01, 0.005)
)
BAND_COVER = 0.9
DEFAULT_BAND = BANDS[0]
LIFE_EXPONENT = 3.0  # ISO 281: basic rating life of ball bearings ~ (C / P)^3 revolutions
# What an operating condition may say: anything else is a typo or a unit mix-up (ADR 0138).
RPM_RANGE = (1.0, 100_000.0)  # shaft speed, rpm
LOAD_RANGE = (1.0, 1e7)  # radial load, N
# How far the training lives may be rescaled: beyond a factor of 4 either way (a load 1.59
# times the training runs' at their speed, or a speed 4 times theirs) the rescaling is an
# extrapolation the training runs say nothing about, so the lives are used as they are.
FACTOR_BOUNDS = (0.25, 4.0)
_LN_HALF = math.log(0.5)


@dataclass(frozen=True, slots=True)
class RunHistory:
    """One training run: health per window (time since the first window) and when it ended."""

    t_s: Sequence[float]
    health: Sequence[float]
    end_s: float


@dataclass(frozen=True, slots=True)
class OperatingCondition:
    """Shaft speed and radial load of a bearing's run (what ISO 281 scales a life by)."""

    shaft_rpm: float
    load_n: float

    def __post_init__(self) -> None:
        for key, value, (low, high) in (
            ("shaft_rpm", self.shaft_rpm, RPM_RANGE),
            ("load_n", self.load_n, LOAD_RANGE),
        ):
            if not low <= value <= high:  # NaN and infinity fail too
                raise ConfigError(
                    f"operating condition: {key} must be in [{low:g}, {high:g}]; found {value!r}"
                )

    def log_life_factor(self, to: OperatingCondition) -> float:
        """The natural log of how many times longer a bearing lives at ``to`` than here."""
        return math.log(self.shaft_rpm / to.shaft_rpm) + LIFE_EXPONENT * math.log(
            self.load_n / to.load_n
        )

    def life_factor(self, to: OperatingCondition) -> float:
        """How many times longer a bearing lives at ``to`` than here (ISO 281); at most
        1e26 within the ranges, so it never overflows."""
        return math.exp(self.log_life_factor(to))


@dataclass(frozen=True, slots=True)
class RulEstimate:
    rul_s: float
    rul_low_s: float
    rul_high_s: float
    fraction: float  # posterior median of the life used so far (0..1)


class RulHistory:
    """A machine's health history, bounded: when full, every other point is dropped (the first
    and the newest are kept), so a long life is remembered at a coarser spacing."""

    def __init__(self, max_points: int = HISTORY_POINTS) -> None:
        if max_points < 4:
            raise ConfigError(f"a health history needs at least 4 points; found {max_points}")
        self.max_points = max_points
        self._t: list[float] = []
        self._h: list[float] = []

    def __len__(self) -> int:
        return len(self._t)

    def add(self, t_s: float, health: float) -> None:
        if self._t and t_s <= self._t[-1]:
            return  # one point per time, in order
        self._t.append(t_s)
        self._h.append(health)
        if len(self._t) > self.max_points:
            keep = [*range(0, len(self._t) - 1, 2), len(self._t) - 1]
            self._t = [self._t[i] for i in keep]
            self._h = [self._h[i] for i in keep]

    def arrays(self) -> tuple[FloatArray, FloatArray]:
        return np.asarray(self._t, dtype=np.float64), np.asarray(self._h, dtype=np.float64)


@dataclass(frozen=True)
class RulModel:
    curves: tuple[tuple[float, ...], ...]  # per training run: health at GRID life fractions
    lives_s: tuple[float, ...]
    sigma: float
    prior_weight: float = 1.0  # 1: the life prior in full; 0: every life fraction alike
    band: tuple[float, float] = DEFAULT_BAND
    point_quantile: float | None = None  # None: the best expected score
    conditions: tuple[OperatingCondition, ...] | None = None  # of the training runs

    def estimate(
        self, age_s: float, history: RulHistory, condition: OperatingCondition | None = None
    ) -> RulEstimate:
        """The estimate for a machine ``age_s`` after commissioning with this health history,
        running at ``condition`` (when known, the training lives are rescaled to it)."""
        t, h = history.arrays()
        if t.size == 0 or not age_s > 0:
            raise ConfigError("a RUL estimate needs an age > 0 and a health history")
        w = self._posterior(age_s, t, h, self._lives(condition))
        rul = age_s * (1.0 - FRACTIONS) / FRACTIONS  # decreasing in u
        point = _point(rul, w, self.point_quantile)
        lo, hi = (float(rul[_quantile_index(w, 1.0 - q)]) for q in self.band)
        frac = float(FRACTIONS[_quantile_index(w, 0.5)])
        return RulEstimate(point, min(lo, point), max(hi, point), frac)

    def life_factors(self, condition: OperatingCondition | None) -> FloatArray | None:
        """Each training life's ISO 281 factor to ``condition``, or None when the lives are
        not rescaled: a condition unknown on either side, or any factor outside
        ``FACTOR_BOUNDS`` (an extrapolation, or a typo: the lives then stay as they are)."""
        if condition is None or self.conditions is None:
            return None
        logs = np.asarray([c.log_life_factor(condition) for c in self.conditions])
        low, high = (math.log(b) for b in FACTOR_BOUNDS)
        if not np.all((logs >= low - 1e-12) & (logs <= high + 1e-12)):
            return None
        return np.asarray(np.exp(logs), dtype=np.float64)

    def _lives(self, condition: OperatingCondition | None) -> FloatArray:
        lives = np.asarray(self.lives_s, dtype=np.float64)
        factors = self.life_factors(condition)
        return lives if factors is None else np.asarray(lives * factors, dtype=np.float64)

    def _posterior(self, age: float, t: FloatArray, h: FloatArray, lives: FloatArray) -> FloatArray:
        """Weights over the candidate life fractions ``FRACTIONS`` (summing to 1)."""
        pick = np.unique(np.linspace(0, t.size - 1, min(MATCH_POINTS, t.size)).astype(int))
        s = np.clip(t[pick] / age, 0.0, 1.0)
        y = h[pick]
        grid = np.linspace(0.0, 1.0, len(self.curves[0]))
        u = FRACTIONS[:, None] * s[None, :]
        log_w = np.vstack(
            [
                -((np.interp(u, grid, np.asarray(c)) - y) ** 2).mean(axis=1) / (2 * self.sigma**2)
                for c in self.curves
            ]
        )
        # Life prior: log-normal density of L = age / u, times |dL/du|: exp(-z^2 / 2) / u.
        logs = np.log(lives)
        mu, spread = float(logs.mean()), max(float(logs.std()), MIN_LOG_SPREAD)
        z = (np.log(age / FRACTIONS) - mu) / spread
        log_w = log_w - self.prior_weight * (0.5 * z**2 + np.log(FRACTIONS))
        w = np.exp(log_w - log_w.max()).sum(axis=0)
        return np.asarray(w / w.sum(), dtype=np.float64)

    def to_json(self) -> dict[str, object]:
        return {
            "curves": [list(c) for c in self.curves],
            "lives_s": list(self.lives_s),
            "sigma": self.sigma,
            "prior_weight": self.prior_weight,
            "band": list(self.band),
            "point_quantile": self.point_quantile,
            "conditions": (
                [[c.shaft_rpm, c.load_n] for c in self.conditions] if self.conditions else None
            ),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RulModel:
        try:
            curves = tuple(tuple(float(v) for v in c) for c in data["curves"])  # type: ignore[attr-defined]
            lives = tuple(float(v) for v in data["lives_s"])  # type: ignore[attr-defined]
            sigma = float(data["sigma"])  # type: ignore[arg-type]
            prior = float(data["prior_weight"])  # type: ignore[arg-type]
            lo, hi = (float(v) for v in data["band"])  # type: ignore[attr-defined]
            # Absent in models of ADR 0069 (format v2): their expected-score point, no rescaling.
            q = data.get("point_quantile")
            point = None if q is None else float(q)  # type: ignore[arg-type]
            conds = data.get("conditions")
            conditions = (
                None
                if conds is None
                else tuple(OperatingCondition(float(r), float(n)) for r, n in conds)  # type: ignore[attr-defined]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed RUL model: {exc!r}") from exc
        except ConfigError as exc:  # a training run's operating condition out of its range
            raise ConfigError(f"RUL model: a training run's {exc}") from exc
        values = [v for c in curves for v in c] + [*lives, sigma, prior, lo, hi, point or 0.5]
        if not curves or len(curves) != len(lives) or len({len(c) for c in curves}) != 1:
            raise ConfigError("RUL model: one curve per training life, all the same length")
        if len(curves[0]) < 2 or not all(math.isfinite(v) for v in values):
            raise ConfigError("RUL model: curves of at least 2 finite points")
        if not (sigma > 0 and all(v > 0 for v in lives) and 0 <= lo < hi <= 1 and prior >= 0):
            raise ConfigError(
                "RUL model: sigma and lives > 0, prior weight >= 0, band quantiles 0 <= low < "
                "high <= 1"
            )
        if not (point is None or 0 < point < 1) or (conditions and len(conditions) != len(lives)):
            raise ConfigError("RUL model: point quantile in (0, 1); one condition per life")
        return cls(curves, lives, sigma, prior, (lo, hi), point, conditions or None)


def phm2012_score(actual: float, estimate: float) -> float:
    """The PHM 2012 challenge's score of one RUL estimate (late estimates cost more)."""
    er = 100.0 * (actual - estimate) / actual
    return math.exp(-_LN_HALF * er / 5) if er <= 0 else math.exp(_LN_HALF * er / 20)


def _point(rul: FloatArray, weights: FloatArray, quantile: float | None) -> float:
    """The point estimate: the remaining life's ``quantile`` (rul falls as the life fraction
    rises, so it is the fraction's quantile 1 - q), or with None the best expected score."""
    if quantile is None:
        return float(rul[int(np.argmax(_expected_scores(rul, weights)))])
    return float(rul[_quantile_index(weights, 1.0 - quantile)])


def _quantile_index(weights: FloatArray, q: float) -> int:
    """The first grid index where the cumulative weight reaches ``q``."""
    return min(int(np.searchsorted(np.cumsum(weights), q)), weights.size - 1)


def _expected_scores(actual: FloatArray, weights: FloatArray) -> FloatArray:
    """Expected PHM 2012 score of estimating each value of ``actual`` when the true remaining
    life is ``actual`` with probability ``weights``."""
    er = 100.0 * (actual[None, :] - actual[:, None]) / actual[None, :]  # [estimate, truth]
    late, early = np.minimum(er, 0.0), np.maximum(er, 0.0)  # each branch stays finite
    a = np.where(er <= 0, np.exp(-_LN_HALF * late / 5), np.exp(_LN_HALF * early / 20))
    return np.asarray(a @ weights, dtype=np.float64)


def _curve(run: RunHistory) -> tuple[float, ...]:
    t = np.asarray(run.t_s, dtype=np.float64)
    h = np.asarray(run.health, dtype=np.float64)
    return tuple(round(float(v), 5) for v in np.interp(np.linspace(0, 1, GRID), t / run.end_s, h))


def fit_rul(
    runs: Sequence[RunHistory],
    *,
    conditions: Sequence[OperatingCondition | None] | None = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    prior_weights: Sequence[float] = DEFAULT_PRIOR_WEIGHTS,
    cut_fractions: Sequence[float] = DEFAULT_CUTS,
) -> RulModel:
    """Fit on whole run-to-failure histories (each ends at its failure), with each run's
    operating condition when every run has one (else the lives are not rescaled)."""
    if not runs:
        raise ConfigError("fitting remaining useful life needs at least one run-to-failure run")
    for r in runs:
        if not r.end_s > 0 or len(r.t_s) != len(r.health) or len(r.t_s) < 2:
            raise ConfigError("a run-to-failure history needs >= 2 points and a life > 0")
    if conditions is not None and len(conditions) != len(runs):
        raise ConfigError(f"{len(conditions)} operating conditions for {len(runs)} runs")
    known = tuple(c for c in conditions or () if c is not None)
    conds = known if len(known) == len(runs) else None
    curves = tuple(_curve(r) for r in runs)
    lives = tuple(float(r.end_s) for r in runs)
    if len(runs) < 3:
        return RulModel(curves, lives, DEFAULT_SIGMA, conditions=conds)

    def inner(sigma: float, prior: float) -> list[tuple[float, FloatArray, float]]:
        """(true remaining life, posterior, age) at each cut of each training run, estimated
        by a model of the other runs (inner leave-one-out)."""
        out = []
        for k, held in enumerate(runs):
            rest = [j for j in range(len(runs)) if j != k]
            model = RulModel(
                tuple(curves[j] for j in rest),
                tuple(lives[j] for j in rest),
                sigma,
                prior,
                conditions=tuple(conds[j] for j in rest) if conds else None,
            )
            held_lives = model._lives(conds[k] if conds else None)
            t = np.asarray(held.t_s, dtype=np.float64)
            h = np.asarray(held.health, dtype=np.float64)
            for p in cut_fractions:
                age = p * held.end_s
                n = int(np.searchsorted(t, age, side="right"))
                if n and age > 0:
                    w = model._posterior(age, t[:n], h[:n], held_lives)
                    out.append((held.end_s - age, w, age))
        return out

    candidates = [(s, w, inner(s, w)) for s in sigmas for w in prior_weights]
    sigma, prior, q, samples = max(
        ((s, w, q, smp) for s, w, smp in candidates for q in POINT_QUANTILES),
        key=lambda c: _mean_score(c[3], c[2]),
    )
    return RulModel(curves, lives, float(sigma), float(prior), _band(samples), q, conditions=conds)


def _mean_score(samples: Sequence[tuple[float, FloatArray, float]], q: float | None) -> float:
    scores = [
        phm2012_score(actual, _point(age * (1.0 - FRACTIONS) / FRACTIONS, w, q))
        for actual, w, age in samples
    ]
    return float(np.mean(scores)) if scores else 0.0


def _band(samples: Sequence[tuple[float, FloatArray, float]]) -> tuple[float, float]:
    """The narrowest band of the ladder that held the truth at ``BAND_COVER`` of the samples."""
    for band in BANDS:
        held = []
        for actual, w, age in samples:
            rul = age * (1.0 - FRACTIONS) / FRACTIONS
            lo, hi = (float(rul[_quantile_index(w, 1.0 - q)]) for q in band)
            held.append(lo <= actual <= hi)
        if held and float(np.mean(held)) >= BAND_COVER:
            return band
    return BANDS[-1]
