"""Remaining useful life from the health indicator, fitted on run-to-failure histories.

Lives of the same kind of bearing under the same kind of test differ several-fold (PRONOSTIA's
learning runs last 1.4 to 7.8 hours), so "bearings fail after N hours" is not something to
learn. What transfers is scale-free: how much longer a run went on, **as a multiple of its age**,
once its health had reached a given state. A state is a bin of health (``state_edges``) and
whether the health is still rising (trend at least ``rising_per_h``) or holds at a plateau: a
bearing whose vibration stepped up and then held (PRONOSTIA Bearing2_1, 2_2) runs on for a long
time; one whose vibration is climbing fails within minutes. The model keeps, per state, the ratio
``remaining / age`` the training runs showed at cut points through their lives, and estimates

* ``rul_s = factor[state] * age``, where ``factor`` is the one constant that scores best on the
  training runs under the PHM 2012 challenge's asymmetric score (a late estimate costs more than
  an early one, so the factor sits below the median ratio);
* ``rul_low_s``, ``rul_high_s``: the ``band_quantiles`` of the training ratios, times the age.

A state no training run visited borrows the same health bin's other trend, else a lower bin.

>>> runs = [RunHistory((0.0, 50.0, 100.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0), end_s=100.0)] * 2
>>> m = fit_rul(runs, cut_fractions=(0.5,))
>>> 45 < m.estimate(50.0, 0.0).rul_s <= 50  # the grid's factor just under the true 1.0
True
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge.errors import ConfigError

DEFAULT_EDGES: tuple[float, ...] = (0.3, 0.6)  # health: below 0.3, 0.3-0.6, 0.6 and above
DEFAULT_RISING_PER_H = 0.5  # health per hour: from as new to failed in two hours
DEFAULT_CUTS: tuple[float, ...] = tuple(round(0.1 + 0.05 * i, 2) for i in range(18))  # .1-.95
_FACTORS = np.exp(np.linspace(math.log(0.01), math.log(20.0), 400))


@dataclass(frozen=True, slots=True)
class RunHistory:
    """One training run: health per window (time since the first window) and when it ended."""

    t_s: Sequence[float]
    health: Sequence[float]
    trend_per_h: Sequence[float]  # health per hour
    end_s: float


@dataclass(frozen=True, slots=True)
class RulEstimate:
    rul_s: float
    rul_low_s: float
    rul_high_s: float
    state: int  # index of the state it came from: 2 x health bin + (1 if rising)


@dataclass(frozen=True, slots=True)
class RulState:
    factor: float
    low: float
    high: float
    samples: int


@dataclass(frozen=True)
class RulModel:
    state_edges: tuple[float, ...]
    rising_per_h: float
    # 2 x (len(state_edges) + 1): per health bin, (holding, rising); None: no run was there
    states: tuple[RulState | None, ...]

    def state_of(self, health: float, trend_per_h: float) -> int:
        rising = 1 if trend_per_h >= self.rising_per_h else 0
        return 2 * bisect.bisect_right(self.state_edges, health) + rising

    def estimate(self, age_s: float, health: float, trend_per_h: float = 0.0) -> RulEstimate:
        k = self.state_of(health, trend_per_h)
        order = [k, k ^ 1] + [j for b in range(k // 2 - 1, -1, -1) for j in (2 * b, 2 * b + 1)]
        st = next((self.states[j] for j in order if self.states[j] is not None), None)
        if st is None:
            raise ConfigError("RUL model has no fitted state")
        age = max(age_s, 0.0)
        point = st.factor * age
        return RulEstimate(point, min(st.low * age, point), max(st.high * age, point), k)

    def to_json(self) -> dict[str, object]:
        return {
            "state_edges": list(self.state_edges),
            "rising_per_h": self.rising_per_h,
            "states": [
                None if s is None else [s.factor, s.low, s.high, s.samples] for s in self.states
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RulModel:
        try:
            edges = tuple(float(e) for e in data["state_edges"])  # type: ignore[attr-defined]
            rising = float(data["rising_per_h"])  # type: ignore[arg-type]
            states = tuple(
                None if s is None else RulState(float(s[0]), float(s[1]), float(s[2]), int(s[3]))
                for s in data["states"]  # type: ignore[attr-defined]
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"malformed RUL model: {exc!r}") from exc
        if len(states) != 2 * (len(edges) + 1) or list(edges) != sorted(edges):
            raise ConfigError("RUL model: two states per health bin, edges sorted")
        if states[0] is None and states[1] is None:
            raise ConfigError("RUL model: the healthy bin must be fitted")
        if not all(s is None or (s.low >= 0 and s.factor >= 0) for s in states):
            raise ConfigError("RUL model: factors must be >= 0")
        return cls(edges, rising, states)


def phm2012_score(actual: float, estimate: float) -> float:
    """The PHM 2012 challenge's score of one RUL estimate (late estimates cost more)."""
    er = 100.0 * (actual - estimate) / actual
    return math.exp(-math.log(0.5) * er / 5) if er <= 0 else math.exp(math.log(0.5) * er / 20)


def fit_rul(
    runs: Sequence[RunHistory],
    *,
    state_edges: Sequence[float] = DEFAULT_EDGES,
    rising_per_h: float = DEFAULT_RISING_PER_H,
    cut_fractions: Sequence[float] = DEFAULT_CUTS,
    band_quantiles: tuple[float, float] = (0.1, 0.9),
) -> RulModel:
    """Fit on whole run-to-failure histories (each ends at its failure)."""
    if not runs:
        raise ConfigError("fitting remaining useful life needs at least one run-to-failure run")
    model = RulModel(tuple(state_edges), rising_per_h, ())
    ratios: list[list[float]] = [[] for _ in range(2 * (len(state_edges) + 1))]
    for run in runs:
        t = np.asarray(run.t_s, dtype=np.float64)
        h = np.asarray(run.health, dtype=np.float64)
        trend = np.asarray(run.trend_per_h, dtype=np.float64)
        for p in cut_fractions:
            age = p * run.end_s
            i = int(np.searchsorted(t, age, side="right")) - 1
            if i < 0 or age <= 0:
                continue  # still learning the baseline: no estimate there
            ratios[model.state_of(float(h[i]), float(trend[i]))].append((run.end_s - age) / age)
    states: list[RulState | None] = []
    for r in ratios:
        if not r:
            states.append(None)
            continue
        arr = np.asarray(r)
        # The factor the asymmetric score prefers, by grid search over the training ratios.
        er = 100.0 * (arr[None, :] - _FACTORS[:, None]) / arr[None, :]
        late, early = np.minimum(er, 0.0), np.maximum(er, 0.0)  # each branch stays finite
        a = np.where(er <= 0, np.exp(-math.log(0.5) * late / 5), np.exp(math.log(0.5) * early / 20))
        best = float(_FACTORS[int(np.argmax(a.mean(axis=1)))])
        lo, hi = np.quantile(arr, band_quantiles)
        states.append(RulState(best, float(lo), float(hi), int(arr.size)))
    if states[0] is None and states[1] is None:
        raise ConfigError("no training run was observed in the healthy state")
    return RulModel(tuple(state_edges), rising_per_h, tuple(states))
