"""The demo's remaining-useful-life step can fail: its judge refuses a band that misses the
unseen run's true remaining life, an estimate that does not fall, and a missing estimate (the
step itself runs in `idmz demo --check`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idmz.demo.wear import SHOWN, UNSEEN, WearRun, rul_lines

LIFE = 1000.0


def rows(rul_of: dict[float, tuple[float, float, float]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for f in SHOWN:
        rul, lo, hi = rul_of[f]
        out.append({"t_s": f * LIFE, "health": 0.1, "alarm": "none", "rul_s": rul,
                    "rul_low_s": lo, "rul_high_s": hi})  # fmt: skip
    return out


def truthful() -> dict[float, tuple[float, float, float]]:
    return {f: (LIFE * (1 - f), 0.5 * LIFE * (1 - f), 2 * LIFE * (1 - f)) for f in SHOWN}


def test_estimates_whose_band_holds_the_truth_and_fall_pass() -> None:
    lines, wrong = rul_lines(rows(truthful()), LIFE)
    assert wrong == [] and len(lines) == len(SHOWN)


def test_a_band_that_misses_the_true_remaining_life_fails_the_step() -> None:
    bad = truthful()
    bad[0.9] = (900.0, 800.0, 950.0)  # truth 100 s
    _, wrong = rul_lines(rows(bad), LIFE)
    assert any("band misses" in w for w in wrong) and any("did not fall" in w for w in wrong)


def test_no_estimate_fails_the_step() -> None:
    _, wrong = rul_lines([{"t_s": f * LIFE, "rul_s": None} for f in SHOWN], LIFE)
    assert len(wrong) == len(SHOWN)


def test_the_demo_runs_are_real_run_to_failure_recordings(tmp_path: Path) -> None:
    path = WearRun(200.0, 0.5, seed=1).write(tmp_path / "r.npz")
    with np.load(path) as z:
        t = z["t_rel_s"]
        rms = np.sqrt((z["acc_horiz"].astype(np.float64) ** 2).mean(axis=1))
        assert t[0] == 0.0 and np.all(np.diff(t) > 9) and t[-1] <= 200.0
        assert rms[-1] > 3 * rms[: t.size // 2].mean()  # it wears out at the end
    assert UNSEEN.life_s not in (3000.0, 4000.0, 5000.0)
