"""From healthy recordings to a fitted anomaly model (used by `idmz model train` and the bench).

Healthy signal is cut into windows the same length as the gateway's (`window_s`), hopped by
`hop_s` (overlap gives more training windows from a short recording), featurized with the same
`Featurizer` the gateway runs, and fitted with `edge.anomaly_model.fit_model`. The result is a
`FittedModel`; `to_onnx()` gives the graph the gateway scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.anomaly_model import FittedModel, TrainingSettings, fit_model
from edge.errors import ConfigError
from edge.featurizer import FEATURE_NAMES, Featurizer, FeaturizerSettings
from edge.plant import LineSettings, StampingLine
from edge.recordings import Recording, windows

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowPlan:
    window_s: float = 1.0
    hop_s: float = 0.25


def feature_matrix(
    recording: Recording,
    featurizer: Featurizer,
    plan: WindowPlan,
    *,
    shaft_rpm: float,
    hop_s: float | None = None,
) -> FloatArray:
    fs = recording.sample_rate_hz
    if fs != featurizer.settings.sample_rate_hz:
        raise ConfigError(
            f"{recording.source}: {fs} Hz; the featurizer runs at {featurizer.settings.sample_rate_hz} Hz"
        )
    size = round(plan.window_s * fs)
    hop = round((hop_s if hop_s is not None else plan.hop_s) * fs)
    rows = [
        featurizer.feature_vector(featurizer.features(w, shaft_rpm / 60.0), FEATURE_NAMES)
        for w in windows(recording.samples, size, hop)
    ]
    if not rows:
        raise ConfigError(f"{recording.source}: shorter than one {plan.window_s} s window")
    return np.vstack(rows)


def simulator_recording(seconds: float, *, seed: int, settings: LineSettings) -> Recording:
    """Healthy vibration from the plant model (what `idmz edge simulate` serves)."""
    line = StampingLine(seed=seed, settings=settings)
    n = round(seconds * settings.sample_rate_hz)
    return Recording(
        line.vibration_block(n), settings.sample_rate_hz, settings.shaft_rpm, "simulator"
    )


def train(
    healthy: Sequence[Recording],
    featurizer_settings: FeaturizerSettings,
    plan: WindowPlan,
    *,
    version: str,
    default_shaft_rpm: float,
    settings: TrainingSettings | None = None,
) -> FittedModel:
    featurizer = Featurizer(featurizer_settings)
    blocks = [
        feature_matrix(r, featurizer, plan, shaft_rpm=r.shaft_rpm or default_shaft_rpm)
        for r in healthy
    ]
    x = np.vstack(blocks)
    summary = {
        "sources": [r.source.rsplit("/", 1)[-1] for r in healthy],
        "healthy_seconds": round(sum(r.samples.size / r.sample_rate_hz for r in healthy), 3),
        "window_s": plan.window_s,
        "hop_s": plan.hop_s,
        "sample_rate_hz": featurizer_settings.sample_rate_hz,
        "bearing": featurizer_settings.bearing.name,
        "envelope_band_hz": list(featurizer_settings.envelope_band_hz),
    }
    return fit_model(
        x, FEATURE_NAMES, version=version, settings=settings or TrainingSettings(), summary=summary
    )
