"""Fit the anomaly model on healthy feature vectors and export it as an ONNX graph.

The model is a regularised Mahalanobis distance, built with `onnx.helper` from parameters
fitted with numpy (no scikit-learn): standardise each feature by its healthy mean and a
floored spread, whiten with the inverse Cholesky factor of a shrunk correlation matrix
(Ledoit-Wolf style shrinkage toward the identity, which keeps it well conditioned with few
healthy windows), and score the mean squared whitened distance. A healthy window scores about
1; the threshold is a high quantile of the healthy training scores times a margin, and never
looks at fault data.

Graph: ``features[N, D] -> Sub(mean) -> Div(scale) -> MatMul(W) -> Mul(self) -> ReduceMean``
``-> score[N, 1]``; metadata carries version, feature names, threshold and a training summary.

>>> import numpy as np
>>> X = np.random.default_rng(1).normal(size=(200, 3))
>>> fit = fit_model(X, ("a", "b", "c"), version="t1")
>>> 0.5 < float(np.median(fit.score(X))) < 1.5
True
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

OPSET = 18
META_PREFIX = "idmz."
INPUT_NAME = "features"
OUTPUT_NAME = "score"
MIN_ROWS = 8  # healthy windows needed to fit (and per fold to cross-validate)


@dataclass(frozen=True, slots=True)
class TrainingSettings:
    # Weight of the identity in the correlation matrix: a few minutes of healthy data (or, on
    # the CWRU rig, seconds) cannot estimate 9 x 9 correlations well.
    shrinkage: float = 0.5
    # Floor for each feature's healthy spread, in feature units (0.05 in log units = 5 %).
    min_scale: float = 0.05
    threshold_quantile: float = 0.995
    threshold_margin: float = 2.0
    # Two-fold contiguous cross-validation on the healthy rows (in time order): fit on one
    # half, score the other. Healthy data drifts (load, temperature) more than overlapping
    # windows of one stretch show; the worst held-out healthy score times this margin is a
    # floor for the threshold. Needs >= 2 x 8 rows; skipped with fewer.
    cv_margin: float = 1.5


@dataclass(frozen=True)
class FittedModel:
    version: str
    feature_names: tuple[str, ...]
    mean: FloatArray
    scale: FloatArray
    whitener: FloatArray
    threshold: float
    summary: Mapping[str, object] = field(default_factory=dict)
    prognostics: str | None = None  # JSON of `edge.prognostics.Prognostics`, when fitted

    def score(self, x: npt.ArrayLike) -> FloatArray:
        """Reference scoring in numpy (the ONNX graph computes the same)."""
        z = (np.atleast_2d(np.asarray(x, dtype=np.float64)) - self.mean) / self.scale
        w = z @ self.whitener
        return np.asarray(np.mean(w * w, axis=1), dtype=np.float64)

    def to_onnx(self) -> onnx.ModelProto:
        d = len(self.feature_names)
        f32 = np.float32
        inits = [
            numpy_helper.from_array(self.mean.astype(f32).reshape(1, d), "mean"),
            numpy_helper.from_array(self.scale.astype(f32).reshape(1, d), "scale"),
            numpy_helper.from_array(self.whitener.astype(f32), "whitener"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
        ]
        nodes = [
            helper.make_node("Sub", [INPUT_NAME, "mean"], ["centered"]),
            helper.make_node("Div", ["centered", "scale"], ["z"]),
            helper.make_node("MatMul", ["z", "whitener"], ["w"]),
            helper.make_node("Mul", ["w", "w"], ["w2"]),
            helper.make_node("ReduceMean", ["w2", "axes"], [OUTPUT_NAME], keepdims=1),
        ]
        graph = helper.make_graph(
            nodes,
            "idmz_anomaly_mahalanobis",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", d])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
            initializer=inits,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="idmz",
            producer_version="1",
            doc_string="idmz edge anomaly model: regularised Mahalanobis distance",
        )
        model.ir_version = 9  # readable by onnxruntime >= 1.16
        meta = {
            "model_version": self.version,
            "feature_names": json.dumps(list(self.feature_names)),
            "threshold": repr(self.threshold),
            "training_summary": json.dumps(dict(self.summary), sort_keys=True),
        }
        if self.prognostics is not None:
            meta["prognostics"] = self.prognostics
        helper.set_model_props(model, {META_PREFIX + k: v for k, v in meta.items()})
        onnx.checker.check_model(model, full_check=True)
        return model


def fit_model(
    healthy: npt.ArrayLike,
    feature_names: Sequence[str],
    *,
    version: str,
    settings: TrainingSettings = TrainingSettings(),
    summary: Mapping[str, object] | None = None,
) -> FittedModel:
    """Fit on healthy feature vectors only (rows = windows, columns = `feature_names`)."""
    x = np.asarray(healthy, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ConfigError(
            f"healthy features must be (windows, {len(feature_names)}); found {x.shape}"
        )
    if x.shape[0] < MIN_ROWS:
        raise ConfigError(f"need at least {MIN_ROWS} healthy windows to fit; found {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("healthy features contain NaN or infinite values")
    model = _fit_core(x, tuple(feature_names), version, settings)
    train_scores = model.score(x)
    threshold = float(np.quantile(train_scores, settings.threshold_quantile))
    threshold *= settings.threshold_margin
    half = x.shape[0] // 2
    cv_max: float | None = None
    if half >= MIN_ROWS:
        a, b = x[:half], x[half:]
        cv_max = max(
            float(_fit_core(a, model.feature_names, version, settings).score(b).max()),
            float(_fit_core(b, model.feature_names, version, settings).score(a).max()),
        )
        threshold = max(threshold, cv_max * settings.cv_margin)
    info: dict[str, object] = {
        "windows": int(x.shape[0]),
        "train_score_median": round(float(np.median(train_scores)), 4),
        "train_score_max": round(float(train_scores.max()), 4),
        "cv_held_out_max": round(cv_max, 4) if cv_max is not None else None,
        "threshold_rule": (
            f"max(quantile {settings.threshold_quantile} of healthy training scores "
            f"x {settings.threshold_margin}, 2-fold held-out healthy max x {settings.cv_margin})"
        ),
        "shrinkage": settings.shrinkage,
        "min_scale": settings.min_scale,
        **(dict(summary) if summary else {}),
    }
    return FittedModel(
        version, model.feature_names, model.mean, model.scale, model.whitener, threshold, info
    )


def _fit_core(
    x: FloatArray, names: tuple[str, ...], version: str, settings: TrainingSettings
) -> FittedModel:
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0, ddof=1), settings.min_scale)
    z = (x - mean) / scale
    corr = np.corrcoef(z, rowvar=False) if x.shape[1] > 1 else np.ones((1, 1))
    corr = np.nan_to_num(corr, nan=0.0)
    lam = settings.shrinkage
    shrunk = (1 - lam) * corr + lam * np.eye(x.shape[1])
    # shrunk = L L^T  =>  z^T shrunk^-1 z = |L^-1 z|^2; row-vector form uses (L^-1)^T.
    chol = np.linalg.cholesky(shrunk)
    whitener = np.linalg.inv(chol).T
    return FittedModel(version, names, mean, scale, whitener, 0.0)


def model_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """The ``idmz.*`` metadata of an ONNX model, without the prefix."""
    return {
        p.key[len(META_PREFIX) :]: p.value
        for p in model.metadata_props
        if p.key.startswith(META_PREFIX)
    }
