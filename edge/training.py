"""From healthy recordings to a fitted anomaly model (used by `idmz model train` and the bench).

Healthy signal is cut into windows the same length as the gateway's (`window_s`), hopped by
`hop_s` (overlap gives more training windows from a short recording), featurized with the same
`Featurizer` the gateway runs, and fitted with `edge.anomaly_model.fit_model`. The result is a
`FittedModel`; `to_onnx()` gives the graph the gateway scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from edge.alarm_levels import AlarmLevels
from edge.anomaly_model import FittedModel, TrainingSettings, fit_model
from edge.bearing import BearingGeometry
from edge.errors import ConfigError
from edge.featurizer import FEATURE_NAMES, Featurizer, FeaturizerSettings
from edge.health import HealthSettings
from edge.plant import LineSettings, StampingLine
from edge.prognostics import fit_prognostics
from edge.recordings import Recording, windows
from edge.rul import OperatingCondition
from edge.run_recording import RunFeatures

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


def fit_run_to_failure(
    runs: Sequence[RunFeatures],
    featurizer_settings: FeaturizerSettings,
    *,
    window_s: float,
    version: str,
    sources: Sequence[str],
    health: HealthSettings | None = None,
    alarms: AlarmLevels | None = None,
    settings: TrainingSettings | None = None,
    conditions: Sequence[OperatingCondition | None] | None = None,
) -> FittedModel:
    """The anomaly model from each run's commissioning baseline (every axis), and prognostics
    (health indicator, alarm levels, RUL) from the whole runs; one signed artefact carries both.
    ``conditions``: each run's shaft speed and load, when known (ADR 0138)."""
    health = health or HealthSettings()
    healthy = [f.model_inputs[f.t_s < health.baseline_s] for f in runs]
    x = np.vstack([h.reshape(-1, h.shape[-1]) for h in healthy])
    fz = featurizer_settings
    b = fz.bearing
    summary: dict[str, object] = {
        "sources": [s.rsplit("/", 1)[-1] for s in sources],
        "window_s": window_s,
        "sample_rate_hz": fz.sample_rate_hz,
        "bearing": b.name,
        "bearing_geometry": [b.n_elements, b.ball_diameter_mm, b.pitch_diameter_mm],
        "envelope_band_hz": list(fz.envelope_band_hz),
        "healthy_from": f"the first {health.baseline_s:g} s of each run-to-failure run",
    }
    prog = fit_prognostics(
        [(f.t_s, f.log_rms) for f in runs],
        health=health,
        alarms=alarms or AlarmLevels(),
        summary={"sources": summary["sources"]},
        conditions=conditions,
    )
    fitted = fit_model(
        x, FEATURE_NAMES, version=version, settings=settings or TrainingSettings(), summary=summary
    )
    return replace(fitted, prognostics=prog.to_json())


def featurizer_settings_from_summary(summary: Mapping[str, object]) -> FeaturizerSettings:
    """The featurizer a run-to-failure model was fitted with (for scoring recordings offline)."""
    try:
        geometry: list[float] = [float(v) for v in summary["bearing_geometry"]]  # type: ignore[attr-defined]
        band: list[float] = [float(v) for v in summary["envelope_band_hz"]]  # type: ignore[attr-defined]
        n, ball, pitch = geometry
        lo, hi = band
        return FeaturizerSettings(
            sample_rate_hz=float(summary["sample_rate_hz"]),  # type: ignore[arg-type]
            bearing=BearingGeometry(str(summary["bearing"]), int(n), ball, pitch),
            envelope_band_hz=(lo, hi),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"the model does not say how it featurized its training runs: {exc!r}"
        ) from exc
