"""Synthetic run-to-failure recordings in the PRONOSTIA ``.npz`` layout, made by the tests.

A run is broadband noise (an accelerometer on a healthy bearing) whose RMS stays at the machine's
own level ``base_g`` for most of its life and then grows exponentially to ``end_ratio`` times
that level at the end, as the PRONOSTIA bearings do in their last minutes. Snapshots are one
``SNAPSHOT`` of samples every ~10 s with jitter in the spacing (irregular ``t_rel_s``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bearing import PRONOSTIA
from edge.featurizer import FeaturizerSettings

FS = 5120  # a 0.1 s snapshot is 512 samples: small and fast, long enough for the featurizer
SNAPSHOT = 512
FZ = FeaturizerSettings(sample_rate_hz=float(FS), bearing=PRONOSTIA, envelope_band_hz=(500, 2000))


@dataclass(frozen=True)
class Run:
    life_s: float
    base_g: float = 0.4
    onset_fraction: float = 0.8  # degradation starts here
    end_ratio: float = 6.0
    spikes: tuple[int, ...] = ()  # snapshot indices with a short impulsive burst
    seed: int = 0

    def times(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 1000)
        steps = 10.0 + rng.uniform(-0.5, 0.5, size=int(self.life_s // 10))
        return np.asarray(np.concatenate([[0.0], np.cumsum(steps)]), dtype=np.float64)

    def amplitude(self, t: np.ndarray) -> np.ndarray:
        t_on = self.onset_fraction * self.life_s
        grow = np.clip((t - t_on) / (self.life_s - t_on), 0.0, None)
        return np.asarray(self.base_g * np.exp(np.log(self.end_ratio) * grow**2))

    def arrays(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        t = self.times()
        amp = self.amplitude(t)
        h = rng.normal(size=(t.size, SNAPSHOT)) * amp[:, None]
        v = rng.normal(size=(t.size, SNAPSHOT)) * 0.8 * amp[:, None]
        for i in self.spikes:
            h[i, ::64] += 20.0 * self.base_g  # a brief impulsive burst (impacts)
        return {
            "acc_horiz": h.astype(np.float32),
            "acc_vert": v.astype(np.float32),
            "fs": np.int32(FS),
            "t_rel_s": t,
            "meta": np.array('{"operating_condition": "1800 rpm, 4000 N"}'),
        }

    def write(self, path: Path) -> Path:
        np.savez_compressed(path, **self.arrays())  # type: ignore[arg-type]
        return path


TRAINING = (
    Run(life_s=3000.0, onset_fraction=0.8, seed=1),
    Run(life_s=5000.0, base_g=1.2, onset_fraction=0.85, seed=2),  # another load: 3x as loud
    Run(life_s=4000.0, onset_fraction=0.75, end_ratio=8.0, seed=3),
)
