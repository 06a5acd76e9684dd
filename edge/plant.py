"""A stamping line as signals: the physics the simulators serve (no I/O here).

`StampingLine` produces, from a seeded random generator and a time it is given:

* press tonnage, ram velocity, hydraulic pressure and motor current, following a stroke cycle;
* drive-end bearing acceleration at `sample_rate_hz` (12 kHz by default) in g: shaft 1x/2x
  lines plus broadband noise when healthy; with a bearing fault, impacts repeating at the
  defect frequency (BPFO, BPFI or 2 x BSF of the configured geometry, see `edge.bearing`)
  that ring a structural resonance, modulated by shaft rotation (inner race) or the cage
  (ball), as in Randall & Antoni (2011) section 2;
* bearing temperature that rises slowly while a bearing fault is present.

A recorded waveform (e.g. a CWRU drive-end file) can replace the synthetic vibration with
`replay(samples)`; it loops.

>>> line = StampingLine(seed=1)
>>> block = line.vibration_block(1200)
>>> block.shape
(1200,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from edge.bearing import SKF_6205, BearingGeometry

FloatArray = npt.NDArray[np.float64]


class Fault(StrEnum):
    NONE = "none"
    BEARING_OUTER_RACE = "bearing-outer-race"
    BEARING_INNER_RACE = "bearing-inner-race"
    BEARING_BALL = "bearing-ball"
    HYDRAULIC_LEAK = "hydraulic-leak"


@dataclass(frozen=True, slots=True)
class LineSettings:
    sample_rate_hz: float = 12000.0
    shaft_rpm: float = 1797.0
    strokes_per_min: float = 30.0
    bearing: BearingGeometry = SKF_6205
    noise_rms_g: float = 0.06
    resonance_hz: float = 3500.0
    resonance_damping: float = 0.06
    impact_g: float = 1.2


class StampingLine:
    """Stateful signal source; every call advances the line's own time base."""

    def __init__(self, seed: int = 0, settings: LineSettings = LineSettings()) -> None:
        self.settings = settings
        self._rng = np.random.default_rng(seed)
        self._n = 0  # vibration samples produced so far
        self._next_impact_s = 0.0
        self._fault = Fault.NONE
        self._fault_since_s: float | None = None
        self._replay: FloatArray | None = None
        self._replay_pos = 0
        self._temp_offset_c = 0.0

    @property
    def fault(self) -> Fault:
        return self._fault

    @property
    def replaying(self) -> bool:
        return self._replay is not None

    def inject(self, fault: Fault, now_s: float) -> None:
        self._fault = fault
        self._fault_since_s = None if fault is Fault.NONE else now_s
        if fault is Fault.NONE:
            self._temp_offset_c = 0.0
        self._next_impact_s = self._n / self.settings.sample_rate_hz

    def replay(self, samples: npt.ArrayLike | None) -> None:
        """Serve `samples` (acceleration in g at `sample_rate_hz`) in a loop; None stops."""
        self._replay = None if samples is None else np.asarray(samples, dtype=np.float64).ravel()
        self._replay_pos = 0

    @property
    def shaft_hz(self) -> float:
        return self.settings.shaft_rpm / 60.0

    def vibration_block(self, n: int) -> FloatArray:
        """The next `n` acceleration samples (g)."""
        s = self.settings
        if self._replay is not None and self._replay.size:
            idx = (self._replay_pos + np.arange(n)) % self._replay.size
            self._replay_pos = int((self._replay_pos + n) % self._replay.size)
            self._n += n
            return np.asarray(self._replay[idx], dtype=np.float64)
        t = (self._n + np.arange(n)) / s.sample_rate_hz
        fr = self.shaft_hz
        x = 0.02 * np.sin(2 * np.pi * fr * t) + 0.01 * np.sin(2 * np.pi * 2 * fr * t + 0.3)
        x += self._rng.normal(0.0, s.noise_rms_g, n)
        if self._fault in (
            Fault.BEARING_OUTER_RACE,
            Fault.BEARING_INNER_RACE,
            Fault.BEARING_BALL,
        ):
            x += self._impacts(t)
        self._n += n
        return x

    def _impacts(self, t: FloatArray) -> FloatArray:
        s = self.settings
        d = s.bearing.defect_frequencies(self.shaft_hz)
        period = {
            Fault.BEARING_OUTER_RACE: 1 / d.bpfo_hz,
            Fault.BEARING_INNER_RACE: 1 / d.bpfi_hz,
            Fault.BEARING_BALL: 1 / (2 * d.bsf_hz),
        }[self._fault]
        out = np.zeros_like(t)
        t0, t1 = float(t[0]), float(t[-1])
        tau = 1.0 / (2 * np.pi * s.resonance_hz * s.resonance_damping)  # decay time constant
        ring = 8 * tau
        start = self._next_impact_s - math.ceil(ring / period) * period
        k = start
        while k <= t1:
            if k + ring >= t0:
                amp = s.impact_g
                if self._fault is Fault.BEARING_INNER_RACE:  # load zone passes once per turn
                    amp *= 0.6 + 0.4 * math.cos(2 * math.pi * self.shaft_hz * k)
                elif self._fault is Fault.BEARING_BALL:  # the ball turns with the cage
                    amp *= 0.5 + 0.5 * abs(math.cos(2 * math.pi * d.ftf_hz * k))
                lo = int(np.searchsorted(t, k))
                hi = int(np.searchsorted(t, k + ring))
                dt = t[lo:hi] - k
                out[lo:hi] += amp * np.exp(-dt / tau) * np.sin(2 * np.pi * s.resonance_hz * dt)
            k += period * (1 + 0.005 * self._rng.standard_normal())  # slip
        self._next_impact_s = k
        return out

    def scalars(self, now_s: float) -> dict[str, float]:
        """Process values at time `now_s` (seconds on any steady clock)."""
        s = self.settings
        phase = (now_s * s.strokes_per_min / 60.0) % 1.0
        stroke = max(0.0, math.sin(2 * math.pi * phase)) ** 4  # forming part of the stroke
        noise = self._rng.normal(0.0, 1.0, 4)
        pressure = 180.0 + 25.0 * stroke + noise[0]
        if self._fault is Fault.HYDRAULIC_LEAK:
            pressure -= 45.0
        tonnage = 250.0 * stroke * (pressure / 205.0) + abs(noise[1])
        bearing_fault = self._fault in (
            Fault.BEARING_OUTER_RACE,
            Fault.BEARING_INNER_RACE,
            Fault.BEARING_BALL,
        )
        if bearing_fault and self._fault_since_s is not None:
            minutes = max(0.0, now_s - self._fault_since_s) / 60.0
            self._temp_offset_c = min(18.0, 3.0 * minutes)
        return {
            "press_tonnage_t": tonnage,
            "ram_velocity_mm_s": 350.0 * math.cos(2 * math.pi * phase) + noise[2],
            "hydraulic_pressure_bar": pressure,
            "motor_current_a": 42.0 + 30.0 * stroke + 0.5 * noise[3],
            "bearing_temperature_c": 45.0 + self._temp_offset_c + 0.05 * noise[0],
            "shaft_speed_rpm": s.shaft_rpm,
            "stroke_count": float(int(now_s * s.strokes_per_min / 60.0)),
        }
