"""Run-to-failure recordings in the PRONOSTIA ``.npz`` layout, and their per-snapshot features.

The layout (``../shared/datasets/pronostia/README.md``): ``acc_horiz`` and ``acc_vert`` (float,
one row per snapshot, in g), ``fs`` (Hz) and ``t_rel_s`` (each snapshot's start, seconds since
the first; snapshots may be irregularly spaced, so time comes from here, never the row index).
An optional ``meta`` JSON string may name the ``operating_condition`` ("1800 rpm, 4000 N"): the
speed feeds the featurizer's defect lines, speed and load the life prior (ADR 0138).

Reading is bounded: no pickles, every array's uncompressed size is checked against
``max_array_bytes`` before it is decompressed, and times must be finite and increasing.

>>> import io, numpy as np
>>> buf = io.BytesIO()
>>> np.savez(buf, acc_horiz=np.zeros((3, 256)), acc_vert=np.zeros((3, 256)), fs=25600,
...          t_rel_s=np.array([0.0, 10.0, 20.0]))
>>> rec = read_run_recording(io.BytesIO(buf.getvalue()), source="mem")
>>> rec.snapshots, rec.window_s
(3, 0.01)
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError
from edge.featurizer import FEATURE_NAMES, Featurizer
from edge.rul import OperatingCondition

FloatArray = npt.NDArray[np.float64]
AXES = ("acc_horiz", "acc_vert")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")  # 1800, 1,800.5
MAX_ARRAY_BYTES = 1 << 30


@dataclass(frozen=True)
class RunRecording:
    axes: tuple[FloatArray, ...]  # one [snapshots, samples] array per accelerometer axis
    t_s: FloatArray
    sample_rate_hz: float
    shaft_rpm: float | None
    source: str
    load_n: float | None = None  # radial load, when the meta names it

    @property
    def condition(self) -> OperatingCondition | None:
        """Speed and load of the run when the recording names both (they scale its life)."""
        if self.shaft_rpm and self.load_n:
            return OperatingCondition(self.shaft_rpm, self.load_n)
        return None

    @property
    def snapshots(self) -> int:
        return int(self.t_s.size)

    @property
    def window_s(self) -> float:
        return float(self.axes[0].shape[1] / self.sample_rate_hz)


@dataclass(frozen=True)
class RunFeatures:
    """Per snapshot: time, log RMS per axis, and the anomaly model's inputs per axis."""

    t_s: FloatArray  # [n]
    log_rms: FloatArray  # [n, axes]
    model_inputs: FloatArray  # [n, axes, len(FEATURE_NAMES)]


def load_run_recording(path: Path, *, max_array_bytes: int = MAX_ARRAY_BYTES) -> RunRecording:
    try:
        with path.open("rb") as fh:
            return read_run_recording(fh, source=str(path), max_array_bytes=max_array_bytes)
    except OSError as exc:
        raise ConfigError(f"cannot read recording {path}: {exc}") from exc


def read_run_recording(
    fh: IO[bytes], *, source: str, max_array_bytes: int = MAX_ARRAY_BYTES
) -> RunRecording:
    try:
        with np.load(fh, allow_pickle=False) as z:
            missing = {*AXES, "fs", "t_rel_s"} - set(z.files)
            if missing:
                raise ConfigError(
                    f"{source}: not a run-to-failure recording; lacks {sorted(missing)}"
                )
            for key in (*AXES, "t_rel_s", "fs", "meta"):
                if key in z.files:
                    size = z.zip.getinfo(f"{key}.npy").file_size
                    if size > max_array_bytes:
                        raise ConfigError(
                            f"{source}: {key} is {size} bytes; limit {max_array_bytes}"
                        )
            axes = tuple(np.asarray(z[k], dtype=np.float64) for k in AXES)
            t_s = np.asarray(z["t_rel_s"], dtype=np.float64)
            fs = float(np.asarray(z["fs"]).reshape(()))
            meta = str(z["meta"]) if "meta" in z.files else ""
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"cannot read recording {source}: {exc}") from exc
    shape = axes[0].shape
    if len(shape) != 2 or shape[0] == 0 or shape[1] < 256 or any(a.shape != shape for a in axes):
        raise ConfigError(f"{source}: axes must be equal [snapshots, >=256 samples]; found {shape}")
    if t_s.shape != (shape[0],) or not np.all(np.isfinite(t_s)) or np.any(np.diff(t_s) <= 0):
        raise ConfigError(f"{source}: t_rel_s must be finite, increasing, one per snapshot")
    if not fs > 0 or not all(np.all(np.isfinite(a)) for a in axes):
        raise ConfigError(f"{source}: fs must be > 0 and samples finite")
    try:
        rpm, load = _from_meta(meta, "rpm"), _from_meta(meta, "N")
        if rpm and load:
            OperatingCondition(rpm, load)  # out of its ranges: refused now, not at training
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return RunRecording(axes, t_s - t_s[0], fs, rpm, source, load)


def operating_condition(meta: str) -> OperatingCondition | None:
    """Speed and load from a recording's meta JSON, when it names both."""
    rpm, load = _from_meta(meta, "rpm"), _from_meta(meta, "N")
    return OperatingCondition(rpm, load) if rpm and load else None


def _from_meta(meta: str, unit: str) -> float | None:
    """The number before ``unit`` in the meta's ``operating_condition`` ("1,800 rpm, 4000 N"):
    None when it names none (or 0); `ConfigError` when it names several, or one that does not
    read as a plain number with optional thousands separators, or one too large for a float."""
    try:
        condition = str(json.loads(meta).get("operating_condition", "")) if meta else ""
    except (ValueError, AttributeError):
        return None
    found = [m.rstrip(",.") for m in re.findall(rf"(?<![\d.])(\d[\d.,]*)\s*{unit}\b", condition)]
    if not found:
        return None
    key = "shaft_rpm" if unit == "rpm" else "load_n"
    if len(found) > 1 or not _NUMBER.fullmatch(found[0]):
        raise ConfigError(
            f"recording meta operating_condition {condition!r}: {key} is ambiguous; want one "
            f"number before {unit!r} (like 1800 or 1,800)"
        )
    value = float(found[0].replace(",", ""))
    if not math.isfinite(value):
        raise ConfigError(f"recording meta operating_condition: {key} {found[0][:20]}... too large")
    return value if value > 0 else None


def run_features(rec: RunRecording, featurizer: Featurizer, *, shaft_rpm: float) -> RunFeatures:
    """Featurize every snapshot of every axis with the gateway's featurizer."""
    if rec.sample_rate_hz != featurizer.settings.sample_rate_hz:
        raise ConfigError(
            f"{rec.source}: {rec.sample_rate_hz} Hz; the model runs at "
            f"{featurizer.settings.sample_rate_hz} Hz"
        )
    shaft_hz = shaft_rpm / 60.0
    n, k = rec.snapshots, len(rec.axes)
    log_rms = np.empty((n, k))
    inputs = np.empty((n, k, len(FEATURE_NAMES)))
    for j, axis in enumerate(rec.axes):
        for i in range(n):
            f = featurizer.features(axis[i], shaft_hz)
            log_rms[i, j] = f["log_rms"]
            inputs[i, j] = featurizer.feature_vector(f, FEATURE_NAMES)
    return RunFeatures(rec.t_s, log_rms, inputs)
