"""Remaining useful life from the health indicator's trajectory, fitted on run-to-failure runs.

A Bayesian estimate of where in its life the machine is, from two things the training runs
teach (ADR 0069):

* **How long bearings live** (prior): a log-normal around each training run's own life, its
  width chosen at fit time (ADR 0139; models before it: one log-normal over all the lives).
  The spread of bearing lives is the reason ISO 281 speaks of an L10 life, not one life. A
  machine that is ``age_s`` old has survived that long, so only lives longer than its age
  remain possible: once it has outlived the shorter training lives, the longer ones count.
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

``sigma`` (how closely a trajectory must follow a training run's), how much the life prior
counts and how wide it is, the point and the band are chosen at fit time by leave-one-run-out
within the training runs (`edge.rul_fit`). Since ADR 0139's amendment a model keeps the inner
runs' best few configurations (``members``), not one: ``rul_s`` is the median of their points
and the band and ``fraction`` come from the mean of their posteriors, so the estimate does not
hinge on which of several near-equal configurations happened to score best.

**Operating condition (ADR 0138).** When the training runs and the machine each say their shaft
speed and radial load, the training lives are rescaled to the machine's condition before they
make the prior, by the basic rating life of ISO 281 (life in hours ~ (C / P)^3 / n for ball
bearings): a bearing loaded 25 % harder lives about half as long. The exponent is the
standard's, not fitted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

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
# Widths (in log life) of the life prior's kernel around each training life (ADR 0139).
DEFAULT_LIFE_WIDTHS: tuple[float | None, ...] = (None, 0.1, 0.2, 0.3, 0.5)
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
MAX_MEMBERS = 16  # configurations a model may combine (bounded input; the fit keeps 5)
# One configuration: sigma, prior weight, life width (None: one log-normal), point quantile.
Member = tuple[float, float, float | None, float | None]


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
    # The life prior: None, one log-normal over all training lives (ADR 0069, models of format
    # v2 and v3); a width, a log-normal of that width around each training run's own life.
    life_width: float | None = None
    # Format v5: the configurations combined (the one above is the first); empty: that one.
    members: tuple[Member, ...] = ()

    def estimate(
        self, age_s: float, history: RulHistory, condition: OperatingCondition | None = None
    ) -> RulEstimate:
        """The estimate for a machine ``age_s`` after commissioning with this health history,
        running at ``condition`` (when known, the training lives are rescaled to it)."""
        t, h = history.arrays()
        if t.size == 0 or not age_s > 0:
            raise ConfigError("a RUL estimate needs an age > 0 and a health history")
        sq, lives = self.mean_squared(age_s, t, h), self._lives(condition)
        rul = age_s * (1.0 - FRACTIONS) / FRACTIONS  # decreasing in u
        members = self.members or (
            (self.sigma, self.prior_weight, self.life_width, self.point_quantile),
        )
        ws = [
            posterior(-sq / (2 * s**2), log_life_prior(age_s, lives, lw), pw)
            for s, pw, lw, _ in members
        ]
        w = np.asarray(np.mean(ws, axis=0), dtype=np.float64)  # the members' mixture
        point = float(
            np.median([point_estimate(rul, m, mb[3]) for m, mb in zip(ws, members, strict=True)])
        )
        lo, hi = (float(rul[quantile_index(w, 1.0 - q)]) for q in self.band)
        frac = float(FRACTIONS[quantile_index(w, 0.5)])
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

    def mean_squared(self, age: float, t: FloatArray, h: FloatArray) -> FloatArray:
        """Per training run and candidate life fraction: the mean squared difference between
        the history and the run's curve, were the machine at that fraction of its life now."""
        pick = np.unique(np.linspace(0, t.size - 1, min(MATCH_POINTS, t.size)).astype(int))
        s = np.clip(t[pick] / age, 0.0, 1.0)
        y = h[pick]
        grid = np.linspace(0.0, 1.0, len(self.curves[0]))
        u = FRACTIONS[:, None] * s[None, :]
        return np.vstack(
            [((np.interp(u, grid, np.asarray(c)) - y) ** 2).mean(axis=1) for c in self.curves]
        )

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
            "life_width": self.life_width,
            "members": [list(m) for m in self.members],
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
            width = data.get("life_width")  # absent before ADR 0139 (v2, v3): one log-normal
            life_width = None if width is None else float(width)  # type: ignore[arg-type]
            raw = (data.get("members") or [])[: MAX_MEMBERS + 1]  # type: ignore[index]
            members = tuple(_member(m) for m in raw)  # more than MAX_MEMBERS: refused below
            conds = data.get("conditions")
            conditions = (
                None
                if conds is None
                else tuple(OperatingCondition(float(r), float(n)) for r, n in conds)  # type: ignore[attr-defined]
            )
        except (KeyError, TypeError, ValueError) as exc:  # and a member of the wrong length
            raise ConfigError(f"malformed RUL model: {exc!r}") from exc
        except ConfigError as exc:  # a training run's operating condition out of its range
            raise ConfigError(f"RUL model: a training run's {exc}") from exc
        values = [v for c in curves for v in c] + [*lives, sigma, prior, lo, hi, point or 0.5]
        values.append(0.5 if life_width is None else life_width)
        if len(members) > MAX_MEMBERS:
            raise ConfigError(f"RUL model: at most {MAX_MEMBERS} members; found {len(members)}")
        for s, pw, lw, q in members:  # each checked as the model's own configuration is
            values += [s, pw, 0.5 if lw is None else lw, 0.5 if q is None else q]
            if not (s > 0 and pw >= 0 and (q is None or 0 < q < 1)):
                raise ConfigError("RUL model: a member's sigma > 0, prior weight >= 0, q in (0, 1)")
            if lw is not None and not 0.01 <= lw <= 10:
                raise ConfigError("RUL model: a member's life width must be in [0.01, 10]")
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
        if life_width is not None and not 0.01 <= life_width <= 10:
            raise ConfigError(f"RUL model: life width must be in [0.01, 10]; found {life_width}")
        return cls(
            curves, lives, sigma, prior, (lo, hi), point, conditions or None, life_width, members
        )


def _member(raw: Sequence[object]) -> Member:
    """One configuration as JSON holds it: [sigma, prior weight, life width, point quantile]."""
    s, pw, lw, q = raw
    return (
        float(s),  # type: ignore[arg-type]
        float(pw),  # type: ignore[arg-type]
        None if lw is None else float(lw),  # type: ignore[arg-type]
        None if q is None else float(q),  # type: ignore[arg-type]
    )


def log_life_prior(age: float, lives: FloatArray, width: float | None) -> FloatArray:
    """The log life prior over the candidate fractions (a row, or one row per training run):
    the density of the life ``L = age / u`` times ``|dL/du|``, up to a constant.

    With ``width`` None, one log-normal fitted to all lives (spread at least
    ``MIN_LOG_SPREAD``, ADR 0069); with a width, one log-normal of that width around each
    run's own life (ADR 0139): the machine lives about as long as the run it resembles, so
    lives that cluster (a short and a long group) stay clusters instead of one wide blur
    centred between them, where no run lived."""
    logs = np.log(lives)
    log_l = np.log(age / FRACTIONS)
    if width is None:
        spread = max(float(logs.std()), MIN_LOG_SPREAD)
        z = (log_l - float(logs.mean())) / spread
        return np.asarray(-(0.5 * z**2) - np.log(FRACTIONS), dtype=np.float64)[None, :]
    z = (log_l[None, :] - logs[:, None]) / width
    return np.asarray(-(0.5 * z**2) - np.log(FRACTIONS)[None, :], dtype=np.float64)


def posterior(log_like: FloatArray, log_prior: FloatArray, prior_weight: float) -> FloatArray:
    """Weights over ``FRACTIONS`` (summing to 1) from per-run log likelihoods and the log
    prior (one row for all runs, or one per run), the prior counted ``prior_weight`` times."""
    log_w = log_like + prior_weight * log_prior
    w = np.exp(log_w - log_w.max()).sum(axis=0)
    return np.asarray(w / w.sum(), dtype=np.float64)


def phm2012_score(actual: float, estimate: float) -> float:
    """The PHM 2012 challenge's score of one RUL estimate (late estimates cost more)."""
    er = 100.0 * (actual - estimate) / actual
    return math.exp(-_LN_HALF * er / 5) if er <= 0 else math.exp(_LN_HALF * er / 20)


def point_estimate(rul: FloatArray, weights: FloatArray, quantile: float | None) -> float:
    """The point estimate: the remaining life's ``quantile`` (rul falls as the life fraction
    rises, so it is the fraction's quantile 1 - q), or with None the best expected score."""
    if quantile is None:
        return float(rul[int(np.argmax(_expected_scores(rul, weights)))])
    return float(rul[quantile_index(weights, 1.0 - quantile)])


def quantile_index(weights: FloatArray, q: float) -> int:
    """The first grid index where the cumulative weight reaches ``q``."""
    return min(int(np.searchsorted(np.cumsum(weights), q)), weights.size - 1)


def _expected_scores(actual: FloatArray, weights: FloatArray) -> FloatArray:
    """Expected PHM 2012 score of estimating each value of ``actual`` when the true remaining
    life is ``actual`` with probability ``weights``. The score depends on the ratio of
    estimate to truth only, so the remaining lives of one age (``age (1 - u) / u`` over
    ``FRACTIONS``) share one matrix, made once."""
    if actual.size == FRACTIONS.size and np.allclose(actual / actual[0], _RATIOS, rtol=1e-9):
        return np.asarray(_score_matrix() @ weights, dtype=np.float64)
    return np.asarray(_scores(actual) @ weights, dtype=np.float64)


_RATIOS: FloatArray = ((1.0 - FRACTIONS) / FRACTIONS) / ((1.0 - FRACTIONS[0]) / FRACTIONS[0])


@cache
def _score_matrix() -> FloatArray:
    return _scores(_RATIOS)


def _scores(actual: FloatArray) -> FloatArray:
    """The PHM 2012 score of each estimate (row) against each truth (column)."""
    er = 100.0 * (actual[None, :] - actual[:, None]) / actual[None, :]  # [estimate, truth]
    late, early = np.minimum(er, 0.0), np.maximum(er, 0.0)  # each branch stays finite
    a = np.where(er <= 0, np.exp(-_LN_HALF * late / 5), np.exp(_LN_HALF * early / 20))
    return np.asarray(a, dtype=np.float64)
