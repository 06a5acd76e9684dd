"""The featurizer against closed-form answers and the bearing defect physics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.bearing import SKF_6205, BearingGeometry
from edge.errors import ConfigError
from edge.featurizer import (
    FEATURE_NAMES,
    G_M_S2,
    Featurizer,
    FeaturizerSettings,
    IsoZones,
    temperature_slope_per_min,
)
from edge.plant import Fault, StampingLine

FS = 12000.0


def featurizer() -> Featurizer:
    return Featurizer(FeaturizerSettings(sample_rate_hz=FS))


def test_skf_6205_defect_frequencies_match_the_cwru_multipliers() -> None:
    f = SKF_6205.defect_frequencies(shaft_hz=1.0)
    assert f.bpfi_hz == pytest.approx(5.4152, rel=1e-3)
    assert f.bpfo_hz == pytest.approx(3.5848, rel=1e-3)
    assert 2 * f.bsf_hz == pytest.approx(4.7135, rel=1e-3)
    assert f.ftf_hz == pytest.approx(0.39828, rel=1e-3)


def test_bearing_geometry_that_cannot_exist_is_refused() -> None:
    with pytest.raises(ConfigError, match="ball_diameter_mm"):
        BearingGeometry("bad", 9, ball_diameter_mm=40.0, pitch_diameter_mm=39.0)


def test_gaussian_noise_has_kurtosis_three_and_a_sine_has_crest_factor_root_two() -> None:
    rng = np.random.default_rng(3)
    noise = featurizer().features(rng.normal(0, 0.1, 120000), shaft_hz=30.0)
    assert noise["kurtosis"] == pytest.approx(3.0, abs=0.1)
    t = np.arange(12000) / FS
    sine = featurizer().features(np.sin(2 * np.pi * 100 * t), shaft_hz=30.0)
    assert sine["crest_factor"] == pytest.approx(math.sqrt(2), rel=1e-3)
    assert sine["kurtosis"] == pytest.approx(1.5, rel=1e-2)


def test_velocity_rms_of_a_tone_is_its_integral_in_mm_per_s() -> None:
    # a(t) = A sin(2 pi f t) in g  ->  v_rms = A g / (2 pi f sqrt 2), in mm/s.
    t = np.arange(12000) / FS
    amp_g, f = 0.5, 160.0
    got = featurizer().features(amp_g * np.sin(2 * np.pi * f * t), 30.0)["velocity_rms_mm_s"]
    want = amp_g * G_M_S2 / (2 * np.pi * f) / math.sqrt(2) * 1000
    assert got == pytest.approx(want, rel=1e-3)


def test_velocity_band_ignores_tones_outside_10_to_1000_hz() -> None:
    t = np.arange(12000) / FS
    x = np.sin(2 * np.pi * 5 * t) + np.sin(2 * np.pi * 2000 * t)
    assert featurizer().features(x, 30.0)["velocity_rms_mm_s"] < 1e-3


def test_iso_10816_3_group_2_rigid_zone_boundaries() -> None:
    z = IsoZones()
    assert [z.zone(v) for v in (1.0, 1.4, 2.8, 4.5, 10.0)] == ["A", "B", "C", "D", "D"]


@pytest.mark.parametrize(
    ("fault", "line"),
    [
        (Fault.BEARING_OUTER_RACE, "env_bpfo"),
        (Fault.BEARING_INNER_RACE, "env_bpfi"),
        (Fault.BEARING_BALL, "env_bsf2"),
    ],
)
def test_each_bearing_fault_lights_its_own_envelope_line(fault: Fault, line: str) -> None:
    healthy = StampingLine(seed=5)
    faulty = StampingLine(seed=5)
    faulty.inject(fault, now_s=0.0)
    fz = featurizer()
    h = fz.features(healthy.vibration_block(12000), healthy.shaft_hz)
    f = fz.features(faulty.vibration_block(12000), faulty.shaft_hz)
    assert f[line] > h[line] + 2.0  # e^2 ~ 7x above the healthy level
    lines = {k: f[k] for k in ("env_bpfo", "env_bpfi", "env_bsf2")}
    assert max(lines, key=lambda k: lines[k]) == line
    assert f["kurtosis"] > 6 > h["kurtosis"]


def test_temperature_slope_is_in_units_per_minute() -> None:
    t = np.arange(0, 300, 5.0)
    assert temperature_slope_per_min(t, 40 + 0.01 * t) == pytest.approx(0.6)
    assert temperature_slope_per_min([1.0], [40.0]) == 0.0


def test_a_window_with_nan_is_refused_not_scored() -> None:
    x = np.zeros(12000)
    x[5] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        featurizer().features(x, 30.0)


@settings(max_examples=40, deadline=None)
@given(
    scale=st.floats(min_value=1e-3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_shape_features_do_not_depend_on_sensor_gain(scale: float, seed: int) -> None:
    x = np.random.default_rng(seed).normal(0, 1, 4096)
    fz = featurizer()
    a, b = fz.features(x, 30.0), fz.features(x * scale, 30.0)
    for name in ("crest_factor", "log_kurtosis", "resonance_share", "env_bpfo", "env_bpfi"):
        assert a[name] == pytest.approx(b[name], rel=1e-6, abs=1e-9)
    assert b["log_rms"] - a["log_rms"] == pytest.approx(math.log(scale), abs=1e-6)
    assert all(math.isfinite(b[n]) for n in FEATURE_NAMES)
