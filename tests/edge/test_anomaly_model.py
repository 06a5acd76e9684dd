"""The anomaly model: fitted on healthy data only, exported to ONNX, scored by onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.anomaly_model import fit_model, model_metadata
from edge.errors import ConfigError, InferenceError
from edge.featurizer import FEATURE_NAMES, Featurizer, FeaturizerSettings
from edge.inference import Scorer
from edge.plant import Fault, LineSettings, StampingLine
from edge.training import WindowPlan, simulator_recording, train

FZ = FeaturizerSettings(sample_rate_hz=12000.0)


@pytest.fixture(scope="module")
def sim_model() -> tuple[bytes, float]:
    rec = simulator_recording(60.0, seed=1, settings=LineSettings())
    fitted = train([rec], FZ, WindowPlan(1.0, 0.25), version="t-1", default_shaft_rpm=1797.0)
    return fitted.to_onnx().SerializeToString(), fitted.threshold


def window_scores(scorer: Scorer, line: StampingLine, n: int) -> np.ndarray:
    fz = Featurizer(FZ)
    rows = [
        fz.feature_vector(fz.features(line.vibration_block(12000), line.shaft_hz), FEATURE_NAMES)
        for _ in range(n)
    ]
    return scorer.score(np.vstack(rows))


def test_exported_model_carries_version_features_threshold_and_summary(
    sim_model: tuple[bytes, float],
) -> None:
    data, threshold = sim_model
    meta = model_metadata(onnx.load_from_string(data))
    assert meta["model_version"] == "t-1"
    assert json.loads(meta["feature_names"]) == list(FEATURE_NAMES)
    assert float(meta["threshold"]) == threshold
    summary = json.loads(meta["training_summary"])
    assert summary["windows"] == 237 and summary["sources"] == ["simulator"]


def test_held_out_healthy_signal_raises_no_false_alarm(sim_model: tuple[bytes, float]) -> None:
    scorer = Scorer.unsafe_from_unsigned_bytes(sim_model[0])
    scores = window_scores(scorer, StampingLine(seed=99), 60)  # another seed, never fitted
    assert (scores > scorer.threshold).sum() == 0


@pytest.mark.parametrize(
    "fault", [Fault.BEARING_OUTER_RACE, Fault.BEARING_INNER_RACE, Fault.BEARING_BALL]
)
def test_every_simulated_bearing_fault_is_detected_in_every_window(
    sim_model: tuple[bytes, float], fault: Fault
) -> None:
    scorer = Scorer.unsafe_from_unsigned_bytes(sim_model[0])
    line = StampingLine(seed=42)
    line.inject(fault, now_s=0.0)
    assert (window_scores(scorer, line, 10) > scorer.threshold).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.integers(1, 12), n=st.integers(8, 60))
def test_onnx_graph_scores_like_the_numpy_reference(seed: int, d: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, d) + rng.normal(size=d)
    fitted = fit_model(x, tuple(f"f{i}" for i in range(d)), version="p")
    probe = rng.normal(size=(7, d)) * 3
    got = Scorer.unsafe_from_unsigned_bytes(fitted.to_onnx().SerializeToString()).score(probe)
    np.testing.assert_allclose(got, fitted.score(probe), rtol=2e-4, atol=2e-4)


def test_too_few_healthy_windows_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 8"):
        fit_model(np.zeros((3, 2)), ("a", "b"), version="x")


def test_scoring_with_the_wrong_number_of_features_is_an_inference_error(
    sim_model: tuple[bytes, float],
) -> None:
    scorer = Scorer.unsafe_from_unsigned_bytes(sim_model[0])
    with pytest.raises(InferenceError, match="takes 9 features"):
        scorer.score(np.zeros((1, 3)))


def test_a_model_fitted_on_other_windows_is_refused_by_the_gateway(tmp_path: Path) -> None:
    from edge.config import GatewayConfig, VibrationChannel
    from edge.gateway import Gateway
    from edge.outbox import Outbox, OutboxLimits
    from edge.sources import OpcUaSource
    from edge.tagmap import TagSpec
    from pki.identity import DeviceIdentity

    rec = simulator_recording(20.0, seed=1, settings=LineSettings())
    fitted = train([rec], FZ, WindowPlan(0.5, 0.25), version="half-s", default_shaft_rpm=1797.0)
    scorer = Scorer.unsafe_from_unsigned_bytes(fitted.to_onnx().SerializeToString())
    wave = TagSpec("vib", "plc", "ns=2;s=v", "g", "press01", "a/b/c/d/e/f", kind="waveform")
    config = GatewayConfig(
        identity=DeviceIdentity.parse("a/b/c/d/e/f"),
        tags=(wave,),
        outbox_path=tmp_path / "o.db",
        opcua=(OpcUaSource("plc", "opc.tcp://127.0.0.1:1/x"),),
        vibration=(VibrationChannel("vib", FZ, window_s=1.0, shaft_rpm=1797.0),),
    )
    with pytest.raises(ConfigError, match="window_s"):
        Gateway(config, outbox=Outbox.open(tmp_path / "o.db", OutboxLimits()), scorer=scorer)
