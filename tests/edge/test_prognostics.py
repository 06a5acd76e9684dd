"""Health indicator, alarm levels and remaining useful life, on run-to-failure data the tests make
(tests/edge/rtf.py): what a plant can trust, rule by rule."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.alarm_levels import AlarmLevel, AlarmLevels, AlarmState
from edge.errors import ConfigError, ModelVerificationError
from edge.featurizer import Featurizer
from edge.health import HealthIndicator, HealthSettings
from edge.prognostics import Prognostics, assess_run, fit_prognostics
from edge.rul import OperatingCondition, RunHistory, phm2012_score
from edge.rul_fit import fit_rul
from edge.run_recording import RunFeatures, RunRecording, read_run_recording, run_features
from edge.training import fit_run_to_failure
from tests.edge.harness import signed_scorer
from tests.edge.rtf import FS, FZ, TRAINING, Run
from tests.support.ca import ProductCA

HEALTH = HealthSettings(baseline_s=300.0)


def features(run: Run) -> RunFeatures:
    a = run.arrays()
    rec = RunRecording(
        (a["acc_horiz"].astype(np.float64), a["acc_vert"].astype(np.float64)),
        a["t_rel_s"],
        float(FS),
        1800.0,
        "synthetic",
    )
    return run_features(rec, Featurizer(FZ), shaft_rpm=1800.0)


@pytest.fixture(scope="module")
def fitted() -> tuple[bytes, Prognostics]:
    model = fit_run_to_failure(
        [features(r) for r in TRAINING],
        FZ,
        window_s=SNAPSHOT_S,
        version="rtf-1",
        sources=["a.npz", "b.npz", "c.npz"],
        health=HEALTH,
    )
    assert model.prognostics is not None
    return model.to_onnx().SerializeToString(), Prognostics.from_json(model.prognostics)


SNAPSHOT_S = 0.1


def levels(prog: Prognostics, run: Run) -> tuple[RunFeatures, list[AlarmLevel]]:
    f = features(run)
    return f, [a.alarm for a in assess_run(prog, f.t_s, f.log_rms)]


# -- health indicator ----------------------------------------------------------------------


def test_health_only_rises_and_ignores_the_machines_own_operating_level(
    fitted: tuple[bytes, Prognostics],
) -> None:
    _, prog = fitted
    quiet = features(Run(life_s=3000.0, base_g=0.3, seed=11))
    loud = features(Run(life_s=3000.0, base_g=3.0, seed=11))  # 10x the level: another load
    hq = [a.health.health for a in assess_run(prog, quiet.t_s, quiet.log_rms) if a.health]
    hl = [a.health.health for a in assess_run(prog, loud.t_s, loud.log_rms) if a.health]
    assert all(b >= a for a, b in itertools.pairwise(hq))  # monotone
    assert max(hq[: len(hq) // 2]) < 0.2 and hq[-1] > 0.8
    assert np.allclose(hq, hl, atol=0.05)  # relative to its own baseline: same trajectory


def test_nothing_is_assessed_while_the_baseline_is_learned() -> None:
    hi = HealthIndicator(HealthSettings(baseline_s=100.0), failure_level=1.0)
    assert all(hi.update(t, (0.0,)) is None for t in np.arange(0.0, 100.0, 10.0))
    assert hi.update(100.0, (0.0,)) is not None and hi.baseline == (0.0,)


def test_windows_closer_than_the_interval_are_not_assessed_twice() -> None:
    hi = HealthIndicator(HealthSettings(baseline_s=10.0, min_baseline_windows=1), failure_level=1)
    taken = [hi.update(t, (0.0,)) for t in np.arange(0.0, 60.0, 0.1)]  # ten windows a second
    assert sum(1 for r in taken if r is not None) == 5  # t = 10, 20, ..., 50


def test_a_window_of_non_finite_or_mismatched_axes_is_refused() -> None:
    hi = HealthIndicator(HealthSettings(baseline_s=10.0, min_baseline_windows=1), failure_level=1)
    with pytest.raises(ConfigError):
        hi.update(0.0, (math.nan,))
    hi.update(0.0, (0.0, 0.0))
    with pytest.raises(ConfigError):
        hi.update(20.0, (0.0,))


# -- alarm levels --------------------------------------------------------------------------


def test_a_brief_impulsive_burst_raises_no_alarm(fitted: tuple[bytes, Prognostics]) -> None:
    _, prog = fitted
    _, seq = levels(prog, Run(life_s=3000.0, onset_fraction=0.95, spikes=(60, 61), seed=21))
    first_half = seq[: len(seq) // 2]
    assert set(first_half) == {AlarmLevel.NONE}


def test_a_failing_bearing_is_alarmed_before_the_end(fitted: tuple[bytes, Prognostics]) -> None:
    _, prog = fitted
    f, seq = levels(prog, Run(life_s=3500.0, base_g=2.0, seed=9))
    first = next(i for i, lv in enumerate(seq) if lv is AlarmLevel.ALARM)
    advisory = next(i for i, lv in enumerate(seq) if lv is not AlarmLevel.NONE)
    assert advisory <= first and f.t_s[first] > 0.8 * f.t_s[-1] and seq[-1] is AlarmLevel.ALARM


def test_an_alarm_hovering_at_its_level_does_not_flap() -> None:
    state = AlarmState(AlarmLevels())
    around = math.log(2.0)
    for i in range(200):
        state.update(around + (0.05 if i % 4 else -0.05))  # 3 above, 1 just below, forever
    assert state.level is AlarmLevel.ALARM and state.onsets[AlarmLevel.ALARM] == 1


def test_an_alarm_clears_only_after_a_sustained_recovery() -> None:
    lv = AlarmLevels()
    state = AlarmState(lv)
    for _ in range(3):
        state.update(1.0)
    assert state.level is AlarmLevel.ALARM
    for _ in range(lv.clear_windows - 1):
        state.update(0.0)
    assert state.level is AlarmLevel.ALARM
    assert state.update(0.0) is AlarmLevel.ADVISORY  # one step at a time, each after its own wait


def test_alarm_levels_out_of_order_are_refused() -> None:
    with pytest.raises(ConfigError):
        AlarmLevels(advisory_level=1.0, alarm_level=0.5)
    with pytest.raises(ConfigError):
        AlarmLevels(persist_of=4, persist_window=3)


# -- remaining useful life -----------------------------------------------------------------


def test_rul_is_banded_and_falls_once_the_bearing_degrades(
    fitted: tuple[bytes, Prognostics],
) -> None:
    _, prog = fitted
    f = features(Run(life_s=4000.0, seed=31))
    seq = assess_run(prog, f.t_s, f.log_rms)
    ests = [(float(t), a.rul) for t, a in zip(f.t_s, seq, strict=True) if a.rul]
    assert all(e.rul_low_s <= e.rul_s <= e.rul_high_s for _, e in ests)
    (t_h, healthy), (t_l, late) = (
        next((t, e) for t, e in ests if t >= p * 4000.0) for p in (0.5, 0.95)
    )
    assert late.rul_s < healthy.rul_s and late.fraction > healthy.fraction
    assert all(e.rul_low_s <= 4000.0 - t <= e.rul_high_s for t, e in ((t_h, healthy), (t_l, late)))


def test_the_challenge_score_costs_late_estimates_more() -> None:
    assert phm2012_score(100.0, 100.0) == 1.0
    assert phm2012_score(100.0, 80.0) == pytest.approx(0.5)  # 20 % early
    assert phm2012_score(100.0, 105.0) == pytest.approx(0.5)  # 5 % late


def test_rul_fit_needs_runs() -> None:
    with pytest.raises(ConfigError):
        fit_rul([])
    model = fit_rul([RunHistory((0.0, 50.0, 100.0), (0.0, 0.0, 1.0), end_s=100.0)])
    assert type(model).from_json(model.to_json()) == model
    for bad in ({"curves": []}, {"sigma": 0.0}, {"band": [0.9, 0.1]}, {"lives_s": [-1.0]}):
        with pytest.raises(ConfigError):
            type(model).from_json({**model.to_json(), **bad})


# -- the signed model carries it -----------------------------------------------------------


def test_a_signed_model_carries_its_prognostics_to_the_gateway(
    fitted: tuple[bytes, Prognostics], test_ca: ProductCA
) -> None:
    data, prog = fitted
    scorer = signed_scorer(test_ca, data)
    assert scorer.prognostics == prog
    assert scorer.training_summary["window_s"] == SNAPSHOT_S


def test_a_signed_model_with_malformed_prognostics_is_refused(
    fitted: tuple[bytes, Prognostics], test_ca: ProductCA
) -> None:
    model = onnx.load_from_string(fitted[0])
    for p in model.metadata_props:
        if p.key == "idmz.prognostics":
            p.value = json.dumps({**json.loads(p.value), "alarms": {"alarm_level": -1.0}})
    with pytest.raises(ModelVerificationError, match="prognostics"):
        signed_scorer(test_ca, model.SerializeToString())


# -- recordings are read with bounds -------------------------------------------------------


def npz(**arrays: object) -> io.BytesIO:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    buf.seek(0)
    return buf


def test_a_recording_larger_than_the_limit_is_refused_before_decompression() -> None:
    a = Run(life_s=200.0).arrays()
    with pytest.raises(ConfigError, match="limit"):
        read_run_recording(npz(**a), source="big", max_array_bytes=10_000)


def test_a_recording_with_pickled_objects_is_refused() -> None:
    a = Run(life_s=200.0).arrays()
    a["acc_horiz"] = np.array([object()] * 3, dtype=object)
    with pytest.raises(ConfigError):
        read_run_recording(npz(**a), source="pickle")


def test_a_recording_whose_time_goes_back_is_refused() -> None:
    a = Run(life_s=200.0).arrays()
    a["t_rel_s"] = a["t_rel_s"][::-1].copy()
    with pytest.raises(ConfigError, match="increasing"):
        read_run_recording(npz(**a), source="backwards")


def test_irregular_snapshot_times_are_kept() -> None:
    a = Run(life_s=200.0).arrays()
    rec = read_run_recording(npz(**a), source="mem")
    assert rec.shaft_rpm == 1800.0 and np.array_equal(rec.t_s, a["t_rel_s"])
    assert len(set(np.round(np.diff(rec.t_s), 6))) > 1


def test_overriding_the_baseline_keeps_every_other_setting(
    fitted: tuple[bytes, Prognostics],
) -> None:
    _, prog = fitted
    longer = dataclasses.replace(prog.health, baseline_s=600.0)
    assert longer.interval_s == prog.health.interval_s and longer.baseline_s == 600.0


def test_prognostics_metadata_round_trips(fitted: tuple[bytes, Prognostics]) -> None:
    _, prog = fitted
    assert Prognostics.from_json(prog.to_json()) == prog
    assert json.loads(prog.to_json())["format"] == "idmz-prognostics/v5"
    assert len(prog.rul.members) > 1  # the inner runs' best configurations, combined
    v4 = json.loads(prog.to_json())  # a model signed before ADR 0139's amendment still runs
    v4["format"] = "idmz-prognostics/v4"
    del v4["rul"]["members"]
    single = dataclasses.replace(prog.rul, members=())
    assert Prognostics.from_json(json.dumps(v4)).rul == single
    v3 = json.loads(prog.to_json())  # a model signed before ADR 0139 still runs
    v3["format"] = "idmz-prognostics/v3"
    del v3["rul"]["life_width"], v3["rul"]["members"]
    assert Prognostics.from_json(json.dumps(v3)).rul.life_width is None
    v2 = json.loads(prog.to_json())  # a model signed before ADR 0138 still runs
    v2["format"] = "idmz-prognostics/v2"
    for key in ("point_quantile", "conditions", "life_width", "members"):
        del v2["rul"][key]
    old = Prognostics.from_json(json.dumps(v2))
    assert old.rul.point_quantile is None and old.rul.conditions is None
    with pytest.raises(ConfigError):
        Prognostics.from_json('{"format": "something-else"}')
    with pytest.raises(ConfigError):
        Prognostics.from_json("[1, 2]")


def test_run_features_refuse_another_sample_rate() -> None:
    a = Run(life_s=100.0).arrays()
    rec = read_run_recording(npz(**{**a, "fs": np.int32(2 * FS)}), source="mem")
    with pytest.raises(ConfigError, match="Hz"):
        run_features(rec, Featurizer(FZ), shaft_rpm=1800.0)


def test_training_files_written_by_the_tests_load(tmp_path: Path) -> None:
    path = TRAINING[0].write(tmp_path / "run.npz")
    rec = read_run_recording(path.open("rb"), source=str(path))
    assert rec.snapshots == TRAINING[0].times().size and rec.window_s == SNAPSHOT_S
    assert rec.condition == OperatingCondition(1800.0, 4000.0)  # from the meta's condition


@pytest.mark.parametrize(
    "condition", ["1800 rpm", "4000 N", "1800 rpm, 0 N", "fast and heavy", "1800 rpm, 4000 Nm"]
)
def test_a_recording_that_does_not_name_speed_and_load_has_no_condition(condition: str) -> None:
    a = Run(life_s=100.0).arrays()
    meta = np.array(json.dumps({"operating_condition": condition}))
    rec = read_run_recording(npz(**{**a, "meta": meta}), source="mem")
    assert rec.condition is None


def recording_with(condition: str) -> RunRecording:
    a = Run(life_s=100.0).arrays()
    meta = np.array(json.dumps({"operating_condition": condition}))
    return read_run_recording(npz(**{**a, "meta": meta}), source="mem")


@pytest.mark.parametrize(
    "condition", ["1,800 rpm, 4,200 N", "1800 rpm,4200 N", "1,800.0 rpm; 4,200.0 N"]
)
def test_a_condition_with_thousands_separators_reads_as_written(condition: str) -> None:
    assert recording_with(condition).condition == OperatingCondition(1800.0, 4200.0)


@pytest.mark.parametrize(
    ("condition", "unit"),
    [
        ("1800 rpm or 1,500 rpm, 4000 N", "rpm"),
        ("1800 rpm, 4000 N to 5000 N", "N"),
        ("12,3456 rpm, 4000 N", "rpm"),
    ],
)
def test_an_ambiguous_speed_or_load_in_the_meta_is_refused(condition: str, unit: str) -> None:
    with pytest.raises(ConfigError, match=f"operating_condition.*{unit}"):
        recording_with(condition)


def test_a_400_digit_load_in_the_meta_is_refused_not_read_as_infinity() -> None:
    with pytest.raises(ConfigError, match="load_n"):
        recording_with("1800 rpm, " + "9" * 400 + " N")


def test_a_load_typo_outside_the_factor_bound_is_warned_once_and_not_rescaled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = [run.times() for run in TRAINING[:3]]
    prog = fit_prognostics(
        [(t, np.r_[np.zeros(t.size - 20), np.linspace(0, 2, 20)]) for t in runs],
        health=HealthSettings(baseline_s=100.0),
        conditions=[OperatingCondition(1800.0, 4000.0)] * 3,
    )
    typo = OperatingCondition(1800.0, 400.0)
    with caplog.at_level(logging.WARNING, logger="edge.prognostics"):
        tracker = prog.tracker(typo)
        for t in np.arange(0.0, 1000.0, 10.0):
            tracker.update(float(t), (0.0,))
    warned = [r.getMessage() for r in caplog.records if "400" in r.getMessage()]
    assert len(warned) == 1 and "1000" in warned[0]  # the factor, with the values
    assert tracker.condition is None  # the training lives as they are (ADR 0069)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-2.0, max_value=3.0), min_size=1, max_size=120))
def test_no_level_is_entered_without_persistence_nor_left_without_recovery(
    raws: list[float],
) -> None:
    lv = AlarmLevels()
    state = AlarmState(lv)
    previous = AlarmLevel.NONE
    order = (AlarmLevel.NONE, AlarmLevel.ADVISORY, AlarmLevel.ALARM)
    for i, raw in enumerate(raws):
        level = state.update(raw)
        window = raws[max(0, i - lv.persist_window + 1) : i + 1]
        if order.index(level) > order.index(previous):
            need = lv.threshold(level)
            assert sum(1 for r in window if r >= need) >= lv.persist_of
        if order.index(level) < order.index(previous):
            recent = raws[i - lv.clear_windows + 1 : i + 1]
            assert len(recent) == lv.clear_windows
            assert all(r < lv.threshold(previous) - lv.hysteresis for r in recent)
        previous = level


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-3.0, max_value=3.0), min_size=12, max_size=80))
def test_health_never_falls(values: list[float]) -> None:
    hi = HealthIndicator(HealthSettings(baseline_s=10.0, min_baseline_windows=2), failure_level=1)
    readings = [hi.update(10.0 * i, (v,)) for i, v in enumerate(values)]
    health = [r.health for r in readings if r is not None]
    assert all(b >= a >= 0.0 for a, b in itertools.pairwise(health))
