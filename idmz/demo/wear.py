"""Remaining useful life in the demo: run-to-failure histories the demo makes, the real CLIs.

The simulated line has no wear (its faults are on or off), and the real run-to-failure data
(PRONOSTIA) are evaluation data that never ship with the product. So the demo writes four
bearing lives of its own in the documented ``.npz`` layout: broadband vibration at the
machine's level for most of the life, then growing as a worn bearing's does, each run with its
own life and its own onset. It fits on three with ``idmz model train --run-to-failure`` and
replays the fourth, unseen, with ``idmz model score --json``; the step passes only if the
printed band holds the true remaining life (known, because the demo made the run) and the
estimate falls as the bearing wears (ADR 0069, 0138).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FS = 5120  # 0.1 s snapshots of 512 samples: small and quick to featurize
SNAPSHOT = 512
BASELINE_S = "300"
SHOWN = (0.5, 0.8, 0.9, 0.95)  # fractions of the unseen run's life the step prints


@dataclass(frozen=True)
class WearRun:
    life_s: float
    onset: float  # fraction of life where the level starts to grow
    seed: int

    def write(self, path: Path) -> Path:
        rng = np.random.default_rng(self.seed)
        steps = 10.0 + rng.uniform(-0.5, 0.5, size=int(self.life_s // 10))  # irregular spacing
        t = np.concatenate([[0.0], np.cumsum(steps)])
        t = t[t <= self.life_s]
        grow = np.clip((t / self.life_s - self.onset) / (1 - self.onset), 0, None)
        level = 0.4 * np.exp(np.log(6.0) * grow**2)  # g: up to 6 x the healthy level
        noise = rng.normal(size=(2, t.size, SNAPSHOT)) * level[None, :, None]
        np.savez_compressed(
            path,
            acc_horiz=noise[0].astype(np.float32),
            acc_vert=(0.8 * noise[1]).astype(np.float32),
            fs=np.int32(FS),
            t_rel_s=t,
            meta=np.array('{"operating_condition": "1800 rpm, 4000 N"}'),
        )
        return path


TRAINING = (WearRun(3000.0, 0.75, 1), WearRun(5000.0, 0.85, 2), WearRun(4000.0, 0.8, 3))
UNSEEN = WearRun(3600.0, 0.8, 4)


def rul_lines(rows: list[dict[str, object]], life_s: float) -> tuple[list[str], list[str]]:
    """The printed estimates at ``SHOWN`` fractions of life, and what is wrong with them."""
    lines, wrong, last = [], [], float("inf")
    for fraction in SHOWN:
        row = next((r for r in rows if float(r["t_s"]) >= fraction * life_s), None)  # type: ignore[arg-type]
        if row is None or row.get("rul_s") is None:
            wrong.append(f"no estimate at {fraction:.0%} of life")
            continue
        rul, lo, hi = (float(row[k]) for k in ("rul_s", "rul_low_s", "rul_high_s"))  # type: ignore[arg-type]
        true = life_s - float(row["t_s"])  # type: ignore[arg-type]
        lines.append(
            f"at {fraction:.0%} of life: health {row.get('health')}, alarm {row.get('alarm')}, "
            f"RUL {rul / 60:.0f} min [{lo / 60:.0f}-{hi / 60:.0f}] (true {true / 60:.0f} min)"
        )
        if not lo <= true <= hi:
            wrong.append(f"at {fraction:.0%} of life the band misses the true {true:.0f} s")
        if rul >= last:
            wrong.append(f"the estimate did not fall by {fraction:.0%} of life")
        last = rul
    return lines, wrong


def parse_rows(printed: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in printed.splitlines() if line.startswith("{")]
