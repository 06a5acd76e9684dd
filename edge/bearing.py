"""Rolling-element bearing geometry and its characteristic defect frequencies.

The kinematic formulas (e.g. Randall & Antoni, "Rolling element bearing diagnostics - A
tutorial", MSSP 25 (2011) 485-520, eq. 1-4; also ISO 15243 terminology), with n rolling
elements, ball diameter d, pitch diameter D, contact angle phi and shaft frequency fr:

* BPFO = (n/2) fr (1 - (d/D) cos phi)        ball pass frequency, outer race
* BPFI = (n/2) fr (1 + (d/D) cos phi)        ball pass frequency, inner race
* BSF  = (D/2d) fr (1 - ((d/D) cos phi)^2)   ball spin frequency (a ball defect strikes both
                                              races, so its line is at 2 x BSF)
* FTF  = (fr/2) (1 - (d/D) cos phi)          fundamental train (cage) frequency

>>> f = SKF_6205.defect_frequencies(shaft_hz=1797 / 60)
>>> round(f.bpfo_hz, 1), round(f.bpfi_hz, 1)
(107.4, 162.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DefectFrequencies:
    bpfo_hz: float
    bpfi_hz: float
    bsf_hz: float
    ftf_hz: float

    def as_dict(self) -> dict[str, float]:
        return {
            "bpfo": self.bpfo_hz,
            "bpfi": self.bpfi_hz,
            "bsf": self.bsf_hz,
            "ftf": self.ftf_hz,
        }


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Geometry of one bearing as the tag map gives it (millimetres, degrees)."""

    name: str
    n_elements: int
    ball_diameter_mm: float
    pitch_diameter_mm: float
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_elements < 3:
            raise ConfigError(
                f"bearing {self.name}: n_elements must be >= 3; found {self.n_elements}"
            )
        if not 0 < self.ball_diameter_mm < self.pitch_diameter_mm:
            raise ConfigError(
                f"bearing {self.name}: need 0 < ball_diameter_mm < pitch_diameter_mm; found "
                f"{self.ball_diameter_mm} and {self.pitch_diameter_mm}"
            )
        if not 0 <= self.contact_angle_deg < 90:
            raise ConfigError(
                f"bearing {self.name}: contact_angle_deg must be in [0, 90); "
                f"found {self.contact_angle_deg}"
            )

    def defect_frequencies(self, shaft_hz: float) -> DefectFrequencies:
        ratio = self.ball_diameter_mm / self.pitch_diameter_mm
        c = ratio * math.cos(math.radians(self.contact_angle_deg))
        n = self.n_elements
        return DefectFrequencies(
            bpfo_hz=n / 2 * shaft_hz * (1 - c),
            bpfi_hz=n / 2 * shaft_hz * (1 + c),
            bsf_hz=self.pitch_diameter_mm / (2 * self.ball_diameter_mm) * shaft_hz * (1 - c * c),
            ftf_hz=shaft_hz / 2 * (1 - c),
        )


# SKF 6205-2RS JEM, the CWRU drive-end bearing: 9 balls, 0.3126 in ball diameter, 1.537 in pitch
# diameter, deep-groove (contact angle 0). Gives BPFO 3.585 fr, BPFI 5.415 fr, 2 x BSF 4.714 fr,
# FTF 0.398 fr, matching the CWRU published multipliers.
SKF_6205 = BearingGeometry(
    name="SKF 6205-2RS JEM",
    n_elements=9,
    ball_diameter_mm=0.3126 * 25.4,
    pitch_diameter_mm=1.537 * 25.4,
)

# The PRONOSTIA test bearing (FEMTO-ST, IEEE PHM 2012 challenge document): 13 balls of 3.5 mm
# between races of 29.1 mm (outer) and 22.1 mm (inner) diameter: pitch diameter 25.6 mm.
PRONOSTIA = BearingGeometry(
    name="PRONOSTIA (NSK 6804DD class)",
    n_elements=13,
    ball_diameter_mm=3.5,
    pitch_diameter_mm=25.6,
)
BEARINGS = {"skf-6205": SKF_6205, "pronostia": PRONOSTIA}
