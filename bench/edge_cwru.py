"""The edge anomaly model on real bearing recordings (CWRU), by the dataset's rule of use.

Rule (../shared/datasets/cwru-bearing/README.md): fit only on healthy data that is not scored
afterwards; score the rest of the healthy recording and every fault file; report per-file
detection rates and the false-alarm rate on held-back healthy windows; never tune a threshold on
the fault files.

* Healthy: ``normal_48k/Normal_0.mat`` (48 kHz, the only healthy recording), decimated by 4 to
  12 kHz as the README prescribes (`scipy.signal.decimate`, FIR, zero phase). The first half
  trains (overlapping windows), the second half is held back and scored.
* Faults: the nine 12 kHz drive-end files, and the three 48 kHz fault files decimated the same
  way as the healthy file.
* The product path throughout: `edge.training.train` fits, the ONNX graph is exported and
  scored by onnxruntime (`edge.inference.Scorer`); the threshold is the model's own (from the
  healthy training windows only).
* Reference in the same run: an overall-level alarm on RMS alone (the classic ISO-style
  vibration-level check), fitted on the same healthy windows.

    .venv/bin/python bench/edge_cwru.py [--data DIR] [--window-s 0.5]

Last line: RESULT edge_cwru auc=<v> detect_at_1pct_fpr=<v> min_file_detect=<v>
false_alarm=<v> rms_only_auc=<v> ratio=<v>
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

try:  # development dependency: the product never reads .mat files or resamples with scipy
    from scipy.io import loadmat
    from scipy.signal import decimate
except ImportError:  # pragma: no cover - reported by main()
    loadmat = decimate = None

from edge.featurizer import FEATURE_NAMES, Featurizer, FeaturizerSettings
from edge.inference import Scorer
from edge.recordings import Recording
from edge.training import WindowPlan, feature_matrix, train

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cwru-bearing"
FS = 12000.0


def load_de(path: Path, fs: int) -> tuple[np.ndarray, float]:
    m = loadmat(str(path))
    x = m[next(k for k in m if k.endswith("DE_time"))].ravel().astype(np.float64)
    rpm_key = next((k for k in m if k.endswith("RPM")), None)
    rpm = float(np.ravel(m[rpm_key])[0]) if rpm_key else 1797.0
    if fs == 48000:
        x = decimate(x, 4, ftype="fir", zero_phase=True)
    return x, rpm


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney probability P(score_fault > score_healthy), ties half."""
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--window-s", type=float, default=0.5)
    args = ap.parse_args()
    if loadmat is None or not (args.data / "labels.csv").exists():
        print(f"SKIP edge_cwru: needs scipy and the CWRU recordings in {args.data}")
        return
    rows = list(csv.DictReader((args.data / "labels.csv").open()))
    healthy_row = next(r for r in rows if r["label"] == "healthy")
    x, rpm = load_de(args.data / healthy_row["file"], int(healthy_row["fs_hz"]))
    half = x.size // 2
    fit_part = Recording(x[:half], FS, rpm, "Normal_0 first half")
    held_part = Recording(x[half:], FS, rpm, "Normal_0 second half")

    settings = FeaturizerSettings(sample_rate_hz=FS)
    plan = WindowPlan(window_s=args.window_s, hop_s=args.window_s / 8)
    fitted = train([fit_part], settings, plan, version="cwru-bench", default_shaft_rpm=rpm)
    scorer = Scorer.unsafe_from_unsigned_bytes(fitted.to_onnx().SerializeToString())
    fz = Featurizer(settings)
    rms_col = FEATURE_NAMES.index("log_rms")

    train_x = feature_matrix(fit_part, fz, plan, shaft_rpm=rpm)
    rms_mu, rms_sd = train_x[:, rms_col].mean(), max(train_x[:, rms_col].std(ddof=1), 1e-3)

    # Held-back healthy: half-overlapping windows of data the model never saw.
    held_x = feature_matrix(held_part, fz, plan, shaft_rpm=rpm, hop_s=args.window_s / 2)
    held = scorer.score(held_x)
    held_rms = np.abs(held_x[:, rms_col] - rms_mu) / rms_sd
    false_alarm = float((held > scorer.threshold).mean())
    print(
        f"fitted on {train_x.shape[0]} windows of {args.window_s} s (first half of Normal_0); "
        f"threshold {scorer.threshold:.3f}"
    )
    print(f"{'file':<22} {'label':<12} {'windows':>7} {'median':>9} {'detect':>7}")
    print(
        f"{'Normal_0 (held back)':<22} {'healthy':<12} {held.size:>7} "
        f"{np.median(held):>9.3f} {false_alarm:>7.2f}  <- false-alarm rate"
    )

    fault_scores, fault_rms, per_file = [], [], {}
    for r in rows:
        if r["label"] == "healthy":
            continue
        fx, frpm = load_de(args.data / r["file"], int(r["fs_hz"]))
        rec = Recording(fx, FS, frpm, r["file"])
        feats = feature_matrix(rec, fz, plan, shaft_rpm=frpm, hop_s=args.window_s)
        s = scorer.score(feats)
        rate = float((s > scorer.threshold).mean())
        per_file[r["file"]] = rate
        fault_scores.append(s)
        fault_rms.append(np.abs(feats[:, rms_col] - rms_mu) / rms_sd)
        print(f"{r['file']:<22} {r['label']:<12} {s.size:>7} {np.median(s):>9.1f} {rate:>7.2f}")

    pos = np.concatenate(fault_scores)
    model_auc = auc(pos, held)
    ref_auc = auc(np.concatenate(fault_rms), held_rms)
    # Detection at <= 1 % false alarms on the held-back healthy windows: a threshold above
    # (1 - 0.01) of them; with few healthy windows this is their maximum.
    cut = np.quantile(held, 0.99, method="higher")
    detect_1pct = float((pos > cut).mean())
    print(
        f"healthy held-back windows: {held.size} (the only healthy recording is 5 s long; "
        "a 1 % false-alarm point is therefore the maximum healthy score)"
    )
    print(
        f"RESULT edge_cwru auc={model_auc:.4f} detect_at_1pct_fpr={detect_1pct:.4f} "
        f"min_file_detect={min(per_file.values()):.4f} false_alarm={false_alarm:.4f} "
        f"rms_only_auc={ref_auc:.4f} ratio={model_auc / ref_auc:.4f}"
    )


if __name__ == "__main__":
    main()
