"""Vibration and temperature features over fixed windows (numpy only).

A window of acceleration samples becomes a small, named feature vector:

* time domain: RMS, peak, crest factor, kurtosis (Pearson; 3.0 for Gaussian noise);
* velocity RMS over 10-1000 Hz, the quantity ISO 10816-3 / ISO 20816-3 zones are defined on,
  obtained by integrating acceleration in the frequency domain (V(f) = A(f) / (j 2 pi f));
* envelope analysis (Randall & Antoni 2011): band-pass around the structural resonance band,
  analytic signal by a one-sided spectrum (Hilbert transform), then band energies of the
  envelope spectrum around the bearing defect frequencies BPFO, BPFI, 2 x BSF and FTF
  (harmonics 1-3), relative to the median envelope-spectrum level;
* the share of energy in the resonance band (impacts excite it first);
* temperature slope by least squares (degrees per minute).

`Featurizer.features(x, shaft_hz)` returns a dict in the fixed order of `FEATURE_NAMES`.

>>> import numpy as np
>>> fz = Featurizer(FeaturizerSettings(sample_rate_hz=12000.0))
>>> f = fz.features(np.random.default_rng(0).normal(0, 0.07, 12000), shaft_hz=29.95)
>>> 2.5 < f["kurtosis"] < 3.5
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.bearing import SKF_6205, BearingGeometry
from edge.errors import ConfigError

FloatArray = npt.NDArray[np.float64]

G_M_S2 = 9.80665  # standard gravity, for accelerometers that report in g

# The model's inputs, in order. Level-like features are logs: their spread is multiplicative,
# so one floor on their healthy spread (10 %) means the same for every one of them. Peak is
# left out: log_peak = log_rms + log_crest.
FEATURE_NAMES: tuple[str, ...] = (
    "log_rms",
    "log_crest",
    "log_kurtosis",
    "log_velocity_rms",
    "resonance_share",
    "env_bpfo",
    "env_bpfi",
    "env_bsf2",
    "env_ftf",
)


@dataclass(frozen=True, slots=True)
class IsoZones:
    """ISO 10816-3 / 20816-3 zone boundaries in mm/s RMS (10-1000 Hz). Defaults: group 2
    (medium machines, 15-300 kW), rigid foundation: A/B 1.4, B/C 2.8, C/D 4.5."""

    ab_mm_s: float = 1.4
    bc_mm_s: float = 2.8
    cd_mm_s: float = 4.5

    def zone(self, velocity_rms_mm_s: float) -> str:
        if velocity_rms_mm_s < self.ab_mm_s:
            return "A"
        if velocity_rms_mm_s < self.bc_mm_s:
            return "B"
        if velocity_rms_mm_s < self.cd_mm_s:
            return "C"
        return "D"


@dataclass(frozen=True, slots=True)
class FeaturizerSettings:
    sample_rate_hz: float
    bearing: BearingGeometry = SKF_6205
    acceleration_unit: str = "g"  # "g" or "m/s2"
    velocity_band_hz: tuple[float, float] = (10.0, 1000.0)
    # Resonance band for envelope analysis; 2-5 kHz suits small motors like the CWRU rig.
    envelope_band_hz: tuple[float, float] = (2000.0, 5000.0)
    envelope_harmonics: int = 3
    line_tolerance: float = 0.02  # +-2 % around each defect harmonic (slip, speed error)
    zones: IsoZones = IsoZones()

    def __post_init__(self) -> None:
        nyquist = self.sample_rate_hz / 2
        if self.sample_rate_hz <= 0:
            raise ConfigError(f"sample_rate_hz must be > 0; found {self.sample_rate_hz}")
        lo, hi = self.envelope_band_hz
        if not 0 < lo < hi <= nyquist:
            raise ConfigError(
                f"envelope_band_hz must lie in (0, {nyquist}] Hz; found {self.envelope_band_hz}"
            )
        if self.acceleration_unit not in ("g", "m/s2"):
            raise ConfigError(
                f"acceleration_unit must be 'g' or 'm/s2'; found {self.acceleration_unit!r}"
            )


class Featurizer:
    """Computes features for windows of one length; caches the frequency grids per length."""

    def __init__(self, settings: FeaturizerSettings) -> None:
        self.settings = settings
        self._grids: dict[int, _Grid] = {}

    def _grid(self, n: int) -> _Grid:
        grid = self._grids.get(n)
        if grid is None:
            grid = _Grid.build(n, self.settings)
            self._grids[n] = grid
        return grid

    def features(self, window: npt.ArrayLike, shaft_hz: float) -> dict[str, float]:
        """Named features of one window of acceleration samples (in the configured unit)."""
        x = np.asarray(window, dtype=np.float64)
        if x.ndim != 1 or x.size < 256:
            raise ConfigError(f"a window needs >= 256 samples in one dimension; found {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ConfigError("window contains NaN or infinite samples")
        s = self.settings
        g = self._grid(x.size)
        x = x - x.mean()
        x2 = x * x
        power = float(x2.sum()) / x.size
        rms = math.sqrt(power)
        peak = float(np.abs(x).max())
        tiny = 1e-12
        kurt = float(np.dot(x2, x2)) / x.size / (power * power) if power > tiny else 0.0
        spec = np.fft.rfft(x)
        mag2 = spec.real**2 + spec.imag**2

        # Velocity RMS by Parseval over one-sided bins: sum(2 |X_k|^2) / N^2 = mean square.
        to_m_s2 = G_M_S2 if s.acceleration_unit == "g" else 1.0
        vel2 = mag2[g.vel_bins] * g.inv_omega2  # a slice: a view, no copy
        velocity_rms_mm_s = float(np.sqrt(2.0 * vel2.sum()) / x.size) * to_m_s2 * 1000.0

        total = float(mag2[1:].sum())
        resonance_share = float(mag2[g.env_bins].sum()) / total if total > tiny else 0.0

        # Envelope: the resonance band's analytic signal, shifted down to 0 Hz (a frequency
        # shift does not change its magnitude) so a short inverse FFT of `env_len` points
        # gives the envelope at a lower sample rate, still far above 3 x BPFI.
        band = np.zeros(g.env_len, dtype=np.complex128)
        band[: g.env_bins.stop - g.env_bins.start] = spec[g.env_bins]
        envelope = np.abs(np.fft.ifft(band))
        envelope -= envelope.mean()
        env_spec = np.abs(np.fft.rfft(envelope))
        lines = self._envelope_lines(env_spec, g, shaft_hz)

        return {
            "log_rms": math.log(rms + tiny),
            "log_crest": math.log((peak + tiny) / (rms + tiny)),
            "log_kurtosis": math.log(kurt + tiny),
            "log_velocity_rms": math.log(velocity_rms_mm_s + 1e-6),
            "resonance_share": resonance_share,
            "env_bpfo": lines["bpfo"],
            "env_bpfi": lines["bpfi"],
            "env_bsf2": lines["bsf2"],
            "env_ftf": lines["ftf"],
            # Not model inputs; reported with every window.
            "rms": rms,
            "peak": peak,
            "crest_factor": peak / rms if rms > tiny else 0.0,
            "kurtosis": kurt,
            "velocity_rms_mm_s": velocity_rms_mm_s,
        }

    def _envelope_lines(self, env_spec: FloatArray, g: _Grid, shaft_hz: float) -> dict[str, float]:
        """log(peak band level / median level) around 1..H harmonics of each defect frequency."""
        s = self.settings
        d = s.bearing.defect_frequencies(shaft_hz)
        targets = {"bpfo": d.bpfo_hz, "bpfi": d.bpfi_hz, "bsf2": 2 * d.bsf_hz, "ftf": d.ftf_hz}
        ref_band = env_spec[g.env_ref_bins]
        floor = float(np.median(ref_band)) + 1e-12 if ref_band.size else 1e-12
        tol, df, top = s.line_tolerance, g.df, env_spec.size - 1
        out: dict[str, float] = {}
        for name, f0 in targets.items():
            levels = []
            for h in range(1, s.envelope_harmonics + 1):
                fh = f0 * h
                lo = max(math.floor(fh * (1 - tol) / df) - 1, 1)
                hi = min(math.ceil(fh * (1 + tol) / df) + 1, top)
                if hi > lo:
                    levels.append(float(env_spec[lo : hi + 1].max()))
            out[name] = math.log(sum(levels) / len(levels) / floor) if levels else 0.0
        return out

    def feature_vector(self, features: dict[str, float], names: Sequence[str]) -> FloatArray:
        try:
            return np.array([features[n] for n in names], dtype=np.float64)
        except KeyError as exc:
            raise ConfigError(f"the model wants feature {exc.args[0]!r}, not computed") from exc

    def iso_zone(self, velocity_rms_mm_s: float) -> str:
        return self.settings.zones.zone(velocity_rms_mm_s)


@dataclass(frozen=True, slots=True)
class _Grid:
    df: float
    vel_bins: slice
    inv_omega2: FloatArray
    env_bins: slice
    env_len: int  # points of the baseband envelope (a power of two >= the band's bins)
    env_ref_bins: slice

    @classmethod
    def build(cls, n: int, s: FeaturizerSettings) -> _Grid:
        freqs = np.fft.rfftfreq(n, d=1.0 / s.sample_rate_hz)
        vlo, vhi = s.velocity_band_hz
        vel_bins = _band(freqs, vlo, vhi)
        omega = 2 * np.pi * freqs[vel_bins]
        elo, ehi = s.envelope_band_hz
        env_bins = _band(freqs, elo, ehi)
        env_len = max(256, 1 << (env_bins.stop - env_bins.start - 1).bit_length())
        df = float(freqs[1])
        # The envelope keeps the window's duration, so its spectrum has the same df.
        env_ref_bins = _band(np.arange(env_len // 2 + 1) * df, 10.0, 500.0)
        inv_omega2 = np.asarray(1.0 / omega**2, dtype=np.float64)
        return cls(df, vel_bins, inv_omega2, env_bins, env_len, env_ref_bins)


def _band(freqs: npt.NDArray[Any], lo: float, hi: float) -> slice:
    """The bins with lo <= f <= hi, as a slice (frequency grids are sorted)."""
    return slice(int(np.searchsorted(freqs, lo, "left")), int(np.searchsorted(freqs, hi, "right")))


def temperature_slope_per_min(times_s: npt.ArrayLike, values: npt.ArrayLike) -> float:
    """Least-squares slope of temperature against time, in units per minute (0 if < 2 points)."""
    t = np.asarray(times_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.size < 2 or np.ptp(t) <= 0:
        return 0.0
    tc = t - t.mean()
    return float(np.dot(tc, v - v.mean()) / np.dot(tc, tc)) * 60.0
