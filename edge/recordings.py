"""Recorded vibration files: read them and bring them to the channel's sample rate.

* ``.npy``: a 1-D array of acceleration samples; the caller says the sample rate.
* ``.mat`` (MATLAB v5, e.g. the CWRU bearing data): the drive-end channel (``*DE_time``) and the
  shaft speed (``*RPM``) when present. Reading them needs scipy, which is a development
  dependency only: the gateway never needs a recording to run.

Resampling by an integer factor uses a windowed-sinc low-pass FIR (Hamming window, cutoff at
0.8 x the new Nyquist frequency), applied forwards and backwards for zero phase, then keeps
every k-th sample; enough for features above 10 Hz and below 5 kHz at 12 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Recording:
    samples: FloatArray
    sample_rate_hz: float
    shaft_rpm: float | None
    source: str


def _decimation_filter(factor: int, taps_per_factor: int = 40) -> FloatArray:
    n = taps_per_factor * factor + 1
    cutoff = 0.8 / factor  # relative to the old Nyquist frequency
    k = np.arange(n) - (n - 1) / 2
    h = cutoff * np.sinc(cutoff * k) * np.hamming(n)
    return np.asarray(h / h.sum(), dtype=np.float64)


def resample(x: npt.ArrayLike, from_hz: float, to_hz: float) -> FloatArray:
    """Decimate by the integer factor from_hz / to_hz (or return x unchanged)."""
    data = np.asarray(x, dtype=np.float64).ravel()
    if from_hz == to_hz:
        return data
    ratio = from_hz / to_hz
    factor = round(ratio)
    if factor < 2 or abs(ratio - factor) > 1e-9:
        raise ConfigError(
            f"can only decimate by an integer factor; {from_hz} Hz -> {to_hz} Hz is {ratio:.4g}"
        )
    h = _decimation_filter(factor)
    y = np.convolve(data, h, mode="same")
    y = np.convolve(y[::-1], h, mode="same")[::-1]  # forwards-backwards: zero phase
    return np.asarray(y[::factor], dtype=np.float64)


def load_recording(path: Path, *, sample_rate_hz: float, target_rate_hz: float) -> Recording:
    """Read a recording made at `sample_rate_hz` and resample it to `target_rate_hz`."""
    suffix = path.suffix.lower()
    rpm: float | None = None
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".mat":
            try:
                from scipy.io import loadmat
            except ImportError as exc:
                raise ConfigError(
                    f"reading {path.name} needs scipy (a development dependency); "
                    "convert it to .npy or install scipy"
                ) from exc
            m = loadmat(str(path))
            key = next((k for k in m if k.endswith("DE_time")), None)
            if key is None:
                raise ConfigError(f"{path}: no *DE_time variable (not a CWRU drive-end file)")
            x = m[key]
            rpm_key = next((k for k in m if k.endswith("RPM")), None)
            rpm = float(np.ravel(m[rpm_key])[0]) if rpm_key else None
        else:
            raise ConfigError(f"{path}: expected a .npy or .mat recording")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read recording {path}: {exc}") from exc
    data = np.asarray(x, dtype=np.float64).ravel()
    if data.size == 0 or not np.all(np.isfinite(data)):
        raise ConfigError(f"{path}: empty or non-finite samples")
    data = resample(data, sample_rate_hz, target_rate_hz)
    return Recording(data, target_rate_hz, rpm, str(path))


def windows(x: FloatArray, size: int, hop: int) -> list[FloatArray]:
    """Consecutive windows of `size` samples, `hop` apart (the tail that does not fit is dropped)."""
    if size <= 0 or hop <= 0:
        raise ConfigError("window size and hop must be positive")
    return [x[i : i + size] for i in range(0, x.size - size + 1, hop)]
