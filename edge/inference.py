"""Local scoring with onnxruntime (behind this one module).

A `Scorer` is made from a `VerifiedModel` only (`edge.model_signing`); tools that score a model
they just trained in-process (benchmarks, `idmz model train`'s self-check) use
`Scorer.unsafe_from_unsigned_bytes`, which the gateway never calls.

One intra-op thread: windows arrive one at a time and the model is tiny, so threads only add
latency and compete with the readers (onnxruntime #11698 on thread settings).
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort

from edge.anomaly_model import INPUT_NAME, OUTPUT_NAME, model_metadata
from edge.errors import ConfigError, InferenceError, ModelVerificationError
from edge.model_signing import VerifiedModel
from edge.prognostics import META_KEY, Prognostics


class Scorer:
    def __init__(
        self, model_bytes: bytes, version: str, feature_names: tuple[str, ...], threshold: float
    ) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                model_bytes, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelVerificationError(f"model {version}: onnxruntime refused it: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise ModelVerificationError(
                f"model {version}: expected one input named {INPUT_NAME!r}"
            )
        self.version = version
        self.feature_names = feature_names
        self.threshold = threshold
        self.sha256 = ""
        self.signer = ""
        self.training_summary: dict[str, object] = {}
        # Health indicator, alarm levels and RUL, when the model was fitted on run-to-failure
        # runs (`idmz model train --run-to-failure`); covered by the same signature.
        self.prognostics: Prognostics | None = None

    @classmethod
    def from_verified(cls, model: VerifiedModel) -> Scorer:
        scorer = cls(model.model_bytes, model.version, model.feature_names, model.threshold)
        scorer.sha256 = model.sha256
        scorer.signer = model.signer
        scorer.training_summary = dict(model.training_summary)
        scorer.prognostics = _prognostics(model.model_bytes, model.version)
        return scorer

    @classmethod
    def unsafe_from_unsigned_bytes(cls, model_bytes: bytes) -> Scorer:
        """For benchmarks and self-checks on a model made in this process; no signature check."""
        meta = model_metadata(onnx.load_from_string(model_bytes))
        scorer = cls(
            model_bytes,
            meta["model_version"],
            tuple(json.loads(meta["feature_names"])),
            float(meta["threshold"]),
        )
        scorer.training_summary = dict(json.loads(meta.get("training_summary", "{}")))
        scorer.prognostics = _prognostics(model_bytes, scorer.version)
        return scorer

    def score(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Scores for rows of features in `feature_names` order."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float32))
        if x.shape[1] != len(self.feature_names):
            raise InferenceError(
                f"model {self.version} takes {len(self.feature_names)} features; got {x.shape[1]}"
            )
        try:
            (out,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: x})
        except Exception as exc:
            raise InferenceError(f"model {self.version} failed to score: {exc}") from exc
        return np.asarray(out, dtype=np.float64).reshape(-1)


def _prognostics(model_bytes: bytes, version: str) -> Prognostics | None:
    """The model's prognostics metadata; a model that carries it malformed is refused whole."""
    text = model_metadata(onnx.load_from_string(model_bytes)).get(META_KEY)
    if text is None:
        return None
    try:
        return Prognostics.from_json(text)
    except ConfigError as exc:
        raise ModelVerificationError(f"model {version}: prognostics refused: {exc}") from exc
