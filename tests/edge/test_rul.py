"""The remaining-useful-life estimator (edge/rul.py) on health trajectories with known answers:
training runs of different lives that all degrade the same way over their life fraction, and a
machine that follows them."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.rul import (
    BANDS,
    DEFAULT_LIFE_WIDTHS,
    FACTOR_BOUNDS,
    LOAD_RANGE,
    MAX_MEMBERS,
    POINT_QUANTILES,
    RPM_RANGE,
    OperatingCondition,
    RulEstimate,
    RulHistory,
    RulModel,
    RunHistory,
)
from edge.rul_fit import TOP_CONFIGS, fit_rul

ONSET = 0.6  # every run's health starts to rise at 60 % of its life


def health_at(fraction: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip((fraction - ONSET) / (1 - ONSET), 0.0, None) ** 2)


def run(life_s: float) -> RunHistory:
    t = np.arange(0.0, life_s + 1e-9, 10.0)
    return RunHistory(tuple(t), tuple(health_at(t / life_s)), life_s)


LIVES = (3000.0, 4000.0, 5000.0, 6000.0)


@pytest.fixture(scope="module")
def model() -> RulModel:
    return fit_rul([run(life) for life in LIVES])


def machine(life_s: float, age_s: float) -> RulHistory:
    history = RulHistory()
    for t in np.arange(0.0, age_s + 1e-9, 10.0):
        history.add(float(t), float(health_at(np.asarray(t / life_s))))
    return history


def estimate(model: RulModel, life_s: float, fraction: float) -> RulEstimate:
    return model.estimate(fraction * life_s, machine(life_s, fraction * life_s))


@pytest.mark.parametrize("fraction", [0.7, 0.8, 0.9, 0.95])
def test_the_band_holds_the_true_remaining_life_of_a_degrading_machine(
    model: RulModel, fraction: float
) -> None:
    life = 4500.0  # between the training lives, none of them
    est = estimate(model, life, fraction)
    truth = life * (1 - fraction)
    assert est.rul_low_s <= truth <= est.rul_high_s
    assert est.rul_low_s <= est.rul_s <= est.rul_high_s
    if fraction >= 0.8:  # health has risen a quarter of the way: it knows where in life it is
        assert abs(est.fraction - fraction) < 0.1


def test_once_degrading_the_estimate_is_close_and_rather_early_than_late(model: RulModel) -> None:
    life = 4500.0
    for fraction in (0.8, 0.9):
        est = estimate(model, life, fraction)
        truth = life * (1 - fraction)
        assert 0.5 * truth <= est.rul_s <= 1.1 * truth


def test_the_estimate_falls_as_the_machine_degrades(model: RulModel) -> None:
    ests = [estimate(model, 4500.0, f) for f in (0.7, 0.8, 0.9, 0.95, 0.99)]
    assert all(b.rul_s < a.rul_s for a, b in itertools.pairwise(ests))
    assert all(b.fraction > a.fraction for a, b in itertools.pairwise(ests))


def test_at_the_same_age_worse_health_means_less_life_left(model: RulModel) -> None:
    age = 3000.0
    rul = []
    for latest in (0.0, 0.2, 0.5, 0.9):
        history = machine(10_000.0, age - 10.0)  # healthy so far
        history.add(age, latest)
        rul.append(model.estimate(age, history).rul_s)
    assert all(b < a for a, b in itertools.pairwise(rul))


def test_a_healthy_machine_is_not_told_it_is_about_to_fail(model: RulModel) -> None:
    est = estimate(model, 4500.0, 0.4)  # before any training run rose
    assert est.fraction < ONSET and est.rul_high_s > 0.6 * 4500.0


def test_the_history_is_bounded_and_keeps_its_first_and_newest_points() -> None:
    history = RulHistory(max_points=16)
    for t in range(1000):
        history.add(float(t), t / 1000)
    t, h = history.arrays()
    assert len(history) <= 16 and t[0] == 0.0 and t[-1] == 999.0
    assert np.all(np.diff(t) > 0) and np.all(np.diff(h) >= 0)
    history.add(500.0, 0.0)  # out of order: ignored
    assert history.arrays()[0][-1] == 999.0


def test_what_is_chosen_at_fit_time_comes_from_the_grid_and_survives_json(
    model: RulModel,
) -> None:
    assert model.sigma in (0.05, 0.1, 0.2, 0.4, 10.0) and model.prior_weight in (0.0, 0.5, 1.0)
    assert model.point_quantile in POINT_QUANTILES and model.band in BANDS
    assert model.life_width in DEFAULT_LIFE_WIDTHS
    assert 1 < len(model.members) <= TOP_CONFIGS and len(set(model.members)) == len(model.members)
    assert model.members[0] == (
        model.sigma,
        model.prior_weight,
        model.life_width,
        model.point_quantile,
    )
    for sigma, weight, width, q in model.members:
        assert sigma in (0.05, 0.1, 0.2, 0.4, 10.0) and weight in (0.0, 0.5, 1.0)
        assert width in DEFAULT_LIFE_WIDTHS and q in POINT_QUANTILES
    assert RulModel.from_json(model.to_json()) == model
    assert len(model.curves) == len(LIVES) and model.lives_s == LIVES


def test_an_estimate_needs_an_age_and_a_history(model: RulModel) -> None:
    with pytest.raises(ConfigError):
        model.estimate(100.0, RulHistory())
    with pytest.raises(ConfigError):
        model.estimate(0.0, machine(1000.0, 100.0))
    with pytest.raises(ConfigError):
        fit_rul([RunHistory((0.0,), (0.0,), 100.0)])


def test_a_model_of_adr_0069_without_point_band_choice_or_conditions_still_loads(
    model: RulModel,
) -> None:
    old = {k: v for k, v in model.to_json().items() if k not in ("point_quantile", "conditions")}
    loaded = RulModel.from_json(old)
    assert loaded.point_quantile is None and loaded.conditions is None
    assert loaded.estimate(2000.0, machine(4500.0, 2000.0)).rul_s > 0


def test_a_model_of_adr_0138_keeps_its_one_log_normal_life_prior(model: RulModel) -> None:
    old = {k: v for k, v in model.to_json().items() if k not in ("life_width", "members")}
    loaded = RulModel.from_json(old)
    assert loaded.life_width is None and loaded.members == ()
    pooled = dataclasses.replace(model, life_width=None, members=())
    history = machine(4500.0, 2000.0)
    assert loaded.estimate(2000.0, history) == pooled.estimate(2000.0, history)


def test_a_model_of_adr_0139_estimates_with_its_one_configuration(model: RulModel) -> None:
    old = {k: v for k, v in model.to_json().items() if k != "members"}
    loaded = RulModel.from_json(old)
    assert loaded.members == ()
    one = dataclasses.replace(model, members=model.members[:1])
    history = machine(4500.0, 3600.0)
    assert loaded.estimate(3600.0, history) == one.estimate(3600.0, history)


def test_the_point_is_the_median_of_the_members_points_not_the_best_members(
    model: RulModel,
) -> None:
    """Members that differ only in their point statistic share one posterior: the band is
    that posterior's, the point the middle one of their three points."""
    base = dataclasses.replace(model, prior_weight=1.0, life_width=0.2, members=())
    member = (base.sigma, 1.0, 0.2)
    combined = dataclasses.replace(
        base, point_quantile=0.1, members=tuple((*member, q) for q in (0.1, 0.5, 0.3))
    )
    history = machine(4500.0, 3600.0)
    est = combined.estimate(3600.0, history)
    middle = dataclasses.replace(base, point_quantile=0.3).estimate(3600.0, history)
    best = dataclasses.replace(base, point_quantile=0.1).estimate(3600.0, history)
    assert est == middle and est.rul_s > best.rul_s


def flat_run(life_s: float) -> RunHistory:
    """A run whose health gives nothing away until its end (most PRONOSTIA runs)."""
    t = np.arange(0.0, life_s + 1e-9, 10.0)
    return RunHistory(tuple(t), tuple(np.where(t > 0.98 * life_s, 1.0, 0.0)), life_s)


def test_a_machine_that_outlived_the_short_lives_is_given_the_long_lived_runs_life() -> None:
    """Two groups of lives, 1000 s and 4000 s: a machine still healthy at 2000 s lives like
    the long group. One log-normal over all four lives (ADR 0069) puts most of its weight
    between the groups, where no run lived, and tells it that it has little left."""
    runs = [flat_run(life) for life in (950.0, 1050.0, 3800.0, 4200.0)]
    m = fit_rul(runs)
    history = RulHistory()
    for t in np.arange(0.0, 2000.0 + 1e-9, 10.0):
        history.add(float(t), 0.0)
    est = m.estimate(2000.0, history)
    one_log_normal = tuple((s, w, None, q) for s, w, _, q in m.members)
    pooled = dataclasses.replace(m, members=one_log_normal).estimate(2000.0, history)
    assert est.rul_low_s <= 2000.0 <= est.rul_high_s  # the long group's remaining life
    assert est.fraction == pytest.approx(2000.0 / 4000.0, abs=0.1)
    assert pooled.rul_s < est.rul_s


@pytest.mark.parametrize(
    "change",
    [
        {"point_quantile": 1.5},
        {"point_quantile": 0.0},
        {"conditions": [[1800.0, 4000.0]]},
        {"life_width": 0.0},
        {"life_width": -0.2},
        {"life_width": float("nan")},
        {"life_width": 1e9},
        {"members": [[0.0, 1.0, 0.1, 0.2]]},
        {"members": [[float("inf"), 1.0, 0.1, 0.2]]},
        {"members": [[0.2, -1.0, None, None]]},
        {"members": [[0.2, 1.0, 0.0, None]]},
        {"members": [[0.2, 1.0, None, 1.5]]},
        {"members": [[0.2, float("nan"), None, None]]},
        {"members": [[0.2, 1.0, None]]},
        {"members": [["x", 1.0, None, None]]},
        {"members": [[0.2, 1.0, None, None]] * (MAX_MEMBERS + 1)},
    ],
)
def test_a_model_with_an_impossible_point_or_conditions_is_refused(
    model: RulModel, change: dict[str, object]
) -> None:
    with pytest.raises(ConfigError):
        RulModel.from_json({**model.to_json(), **change})


LIGHT, HEAVY = OperatingCondition(1800.0, 4000.0), OperatingCondition(1800.0, 5000.0)


def test_iso_281_a_bearing_loaded_a_quarter_harder_lives_about_half_as_long() -> None:
    assert HEAVY.life_factor(LIGHT) == pytest.approx(1.25**3)
    assert LIGHT.life_factor(HEAVY) == pytest.approx(0.512)
    assert OperatingCondition(1500.0, 4000.0).life_factor(LIGHT) == pytest.approx(1.0 / 1.2)
    with pytest.raises(ConfigError):
        OperatingCondition(0.0, 4000.0)


def test_a_heavier_loaded_machine_is_given_less_life_than_its_lighter_loaded_twin() -> None:
    """Training runs at a light load; the same healthy history at a heavier load means the
    life prior (ISO 281) shrinks, and so does the estimate and its band."""
    m = fit_rul([run(life) for life in LIVES], conditions=[LIGHT] * len(LIVES))
    assert m.conditions == (LIGHT,) * len(LIVES)
    history = machine(10_000.0, 1500.0)
    same, heavy = (m.estimate(1500.0, history, c) for c in (LIGHT, HEAVY))
    unknown = m.estimate(1500.0, history)
    assert heavy.rul_s < same.rul_s and heavy.rul_high_s < same.rul_high_s
    assert unknown == same  # the machine's condition unknown: the training lives as they are


def test_conditions_are_used_only_when_every_training_run_has_one() -> None:
    runs = [run(life) for life in LIVES]
    partial = fit_rul(runs, conditions=[LIGHT, None, LIGHT, LIGHT])
    assert partial.conditions is None
    with pytest.raises(ConfigError):
        fit_rul(runs, conditions=[LIGHT])


@pytest.mark.parametrize(
    ("rpm", "load"),
    [
        (float("inf"), 4000.0),
        (1800.0, float("inf")),
        (float("nan"), 4000.0),
        (1e300, 4000.0),
        (1800.0, 1e300),
        (1800.0, 1e-300),
        (0.5, 4000.0),
        (1800.0, 0.5),
    ],
)
def test_an_infinite_or_implausible_speed_or_load_is_refused(rpm: float, load: float) -> None:
    with pytest.raises(ConfigError, match=r"shaft_rpm|load_n"):
        OperatingCondition(rpm, load)


def test_the_life_factor_between_the_most_extreme_conditions_does_not_overflow() -> None:
    slow_light = OperatingCondition(RPM_RANGE[0], LOAD_RANGE[0])
    fast_heavy = OperatingCondition(RPM_RANGE[1], LOAD_RANGE[1])
    assert 0.0 < slow_light.life_factor(fast_heavy) < 1e-20
    assert 1e20 < fast_heavy.life_factor(slow_light) < float("inf")


@pytest.mark.parametrize("conditions", [[["inf", 1.0]], [[1800.0, "1e400"]], [[1e300, 4000.0]]])
def test_a_model_whose_training_conditions_are_not_finite_or_plausible_is_refused(
    conditions: list[list[object]],
) -> None:
    m = fit_rul([run(life) for life in LIVES], conditions=[LIGHT] * len(LIVES))
    data = m.to_json()
    bad = conditions + data["conditions"][1:]  # type: ignore[index]
    with pytest.raises(ConfigError, match="operating condition"):
        RulModel.from_json({**data, "conditions": bad})


def test_a_load_typo_ten_times_too_light_does_not_stretch_the_life_prior() -> None:
    """4000 N trained, 400 N configured: ISO 281 would make every life 1000 times longer (a
    dangerously late RUL); beyond the bound the lives are used as they are (ADR 0069)."""
    m = fit_rul([run(life) for life in LIVES], conditions=[LIGHT] * len(LIVES))
    history = machine(10_000.0, 1500.0)
    typo = OperatingCondition(1800.0, 400.0)
    assert m.life_factors(typo) is None and m.life_factors(HEAVY) is not None
    assert m.estimate(1500.0, history, typo) == m.estimate(1500.0, history)
    assert m.estimate(1500.0, history, HEAVY) != m.estimate(1500.0, history)
    low, high = FACTOR_BOUNDS
    assert m.life_factors(OperatingCondition(1800.0 / high, 4000.0)) is not None  # on the bound
    assert m.life_factors(OperatingCondition(1800.0 / high / 1.01, 4000.0)) is None
    assert m.life_factors(OperatingCondition(1800.0 / low * 1.01, 4000.0)) is None
