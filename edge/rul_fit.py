"""Fitting the remaining-useful-life model (`edge.rul`) on whole run-to-failure histories.

What the estimate cannot learn from one run is chosen by leave-one-run-out **within the
training runs** (never on a run being evaluated), at cut points every 5 % of 10-95 % of life:
``sigma`` (how closely a trajectory must follow a training run's), how much the life prior
counts and how wide it is around each training life (ADR 0139), which statistic is the point
(ADR 0138), and the band: the posterior's 5-95 % quantiles, or the narrowest wider pair of a
fixed ladder that held the truth at 90 % of those cuts when 5-95 % did not.

Not one configuration but the ``TOP_CONFIGS`` best (ADR 0139, amended): with five or six
training runs several score within a few hundredths of each other at the inner cuts, and which
one wins is chance; the model keeps them all and estimates with the median of their points
and the band of their averaged posterior (its width chosen on that average's inner samples).

>>> from edge.rul import RulHistory
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

from collections.abc import Sequence

import numpy as np

from edge.errors import ConfigError
from edge.rul import (
    BAND_COVER,
    BANDS,
    DEFAULT_CUTS,
    DEFAULT_LIFE_WIDTHS,
    DEFAULT_PRIOR_WEIGHTS,
    DEFAULT_SIGMA,
    DEFAULT_SIGMAS,
    FRACTIONS,
    GRID,
    POINT_QUANTILES,
    FloatArray,
    Member,
    OperatingCondition,
    RulModel,
    RunHistory,
    log_life_prior,
    phm2012_score,
    point_estimate,
    posterior,
    quantile_index,
)

DEFAULT_LIFE_WIDTH = 0.3  # with fewer than three runs: as wide as ADR 0069's narrowest prior
TOP_CONFIGS = 5  # configurations combined; fixed a priori, not fitted (ADR 0139, amended)
Sample = tuple[float, FloatArray, float]  # (true remaining life, posterior, age)


def fit_rul(
    runs: Sequence[RunHistory],
    *,
    conditions: Sequence[OperatingCondition | None] | None = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    prior_weights: Sequence[float] = DEFAULT_PRIOR_WEIGHTS,
    life_widths: Sequence[float | None] = DEFAULT_LIFE_WIDTHS,
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
        return RulModel(
            curves, lives, DEFAULT_SIGMA, conditions=conds, life_width=DEFAULT_LIFE_WIDTH
        )

    # Each training run held out in turn, estimated at its cuts by a model of the others: the
    # likelihood depends on sigma only, the prior on the width only, so each is made once.
    cuts: list[tuple[float, float, FloatArray, FloatArray]] = []  # truth, age, lives, sq
    for k, held in enumerate(runs):
        rest = [j for j in range(len(runs)) if j != k]
        model = RulModel(
            tuple(curves[j] for j in rest),
            tuple(lives[j] for j in rest),
            DEFAULT_SIGMA,
            conditions=tuple(conds[j] for j in rest) if conds else None,
        )
        held_lives = model._lives(conds[k] if conds else None)
        t = np.asarray(held.t_s, dtype=np.float64)
        h = np.asarray(held.health, dtype=np.float64)
        for p in cut_fractions:
            age = p * held.end_s
            n = int(np.searchsorted(t, age, side="right"))
            if n and age > 0:
                sq = model.mean_squared(age, t[:n], h[:n])
                cuts.append((held.end_s - age, age, held_lives, sq))
    priors = {w: [log_life_prior(age, ls, w) for _, age, ls, _ in cuts] for w in life_widths}
    # Ranked by whether the widest band of the ladder held the truth at BAND_COVER of the
    # inner cuts (a prior too narrow for the training runs' own spread of lives cannot give an
    # honest band, however well its point scores), then by the mean score with its best point.
    # With no prior weight the width changes nothing: one such candidate per sigma.
    ranked: list[tuple[tuple[bool, float], Member, list[Sample]]] = []
    for sigma in sigmas:
        for weight in prior_weights:
            for width in life_widths if weight > 0 else life_widths[:1]:
                samples = [
                    (truth, posterior(-sq / (2 * sigma**2), prior, weight), age)
                    for (truth, age, _, sq), prior in zip(cuts, priors[width], strict=True)
                ]
                honest = _cover(samples, BANDS[-1]) >= BAND_COVER
                score, q = max(
                    ((_mean_score(samples, q), q) for q in POINT_QUANTILES), key=lambda p: p[0]
                )
                ranked.append(((honest, score), (sigma, weight, width, q), samples))
    if not ranked:
        raise ConfigError("fitting remaining useful life needs candidates to choose from")
    ranked.sort(key=lambda r: r[0], reverse=True)  # stable: ties keep the grid's order
    top = ranked[:TOP_CONFIGS]
    mixed = [  # the members' averaged posterior at each inner cut: what the band is chosen on
        (truth, np.mean([m[2][i][1] for m in top], axis=0), age)
        for i, (truth, _, age) in enumerate(top[0][2])
    ]
    sigma, weight, width, q = top[0][1]
    return RulModel(
        curves,
        lives,
        float(sigma),
        float(weight),
        _band(mixed),
        q,
        conds,
        width,
        tuple(m[1] for m in top),
    )


def _curve(run: RunHistory) -> tuple[float, ...]:
    t = np.asarray(run.t_s, dtype=np.float64)
    h = np.asarray(run.health, dtype=np.float64)
    return tuple(round(float(v), 5) for v in np.interp(np.linspace(0, 1, GRID), t / run.end_s, h))


def _mean_score(samples: Sequence[Sample], q: float | None) -> float:
    scores = [
        phm2012_score(actual, point_estimate(age * (1.0 - FRACTIONS) / FRACTIONS, w, q))
        for actual, w, age in samples
    ]
    return float(np.mean(scores)) if scores else 0.0


def _band(samples: Sequence[Sample]) -> tuple[float, float]:
    """The narrowest band of the ladder that held the truth at ``BAND_COVER`` of the samples."""
    return next((b for b in BANDS if _cover(samples, b) >= BAND_COVER), BANDS[-1])


def _cover(samples: Sequence[Sample], band: tuple[float, float]) -> float:
    """The share of the samples whose ``band`` of quantiles held the true remaining life."""
    held = []
    for actual, w, age in samples:
        rul = age * (1.0 - FRACTIONS) / FRACTIONS
        lo, hi = (float(rul[quantile_index(w, 1.0 - q)]) for q in band)
        held.append(lo <= actual <= hi)
    return float(np.mean(held)) if held else 0.0
