"""`idmz model`: train, sign and verify the edge anomaly model.

    idmz model train --healthy normal.npy --sample-rate 12000 --out model.onnx
    idmz model train --from-simulator 120 --out model.onnx      healthy data from the plant model
    idmz model train --run-to-failure run1.npz run2.npz --out model.onnx     with prognostics
    idmz model score --model model.onnx --recording run3.npz --json [--baseline-s 600]
    idmz model sign --model model.onnx --cert signer.pem --key signer.key --chain chain.pem
    idmz model verify --model model.onnx --root root.pem --crl crl.pem

Train fits the anomaly model only on healthy data (with --run-to-failure: the first
``--baseline-s`` of each run) and, from whole run-to-failure runs, the health indicator's failure
level and the remaining-useful-life model (docs/edge.md, ADR 0067, 0069, 0138; each run's speed
and load from its ``meta.operating_condition`` rescale the life prior). Score replays a recording as
a gateway commissioned at its start would see it (at the recording's own operating condition)
and prints one JSON object per snapshot. Sign writes ``<model>.sig`` (JSON: SHA-256, signature, signer
chain); gateways refuse a model whose signature or signer certificate does not verify.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bedrock.errors as category
from idmz.home import read_secret_file


class ModelUsageError(category.UsageError):
    """The command line asked for something impossible (exit code 2)."""


def _cmd_train(args: argparse.Namespace) -> int:
    from edge.bearing import BEARINGS
    from edge.featurizer import Featurizer, FeaturizerSettings
    from edge.plant import LineSettings
    from edge.recordings import load_recording
    from edge.training import WindowPlan, feature_matrix, simulator_recording, train

    if args.run_to_failure:
        if args.healthy or args.from_simulator:
            raise ModelUsageError("--run-to-failure does not mix with --healthy/--from-simulator")
        return _train_run_to_failure(args)
    if not args.healthy and not args.from_simulator:
        raise ModelUsageError(
            "give --healthy FILES..., --from-simulator SECONDS or --run-to-failure FILES..."
        )
    fs = args.target_rate
    recordings = [
        load_recording(Path(p), sample_rate_hz=args.sample_rate, target_rate_hz=fs)
        for p in args.healthy or []
    ]
    if args.from_simulator:
        line = LineSettings(sample_rate_hz=fs, shaft_rpm=args.shaft_rpm)
        recordings.append(simulator_recording(args.from_simulator, seed=args.seed, settings=line))
    fz = FeaturizerSettings(
        sample_rate_hz=fs,
        bearing=BEARINGS[args.bearing or "skf-6205"],
        envelope_band_hz=(args.band_low, args.band_high),
    )
    plan = WindowPlan(window_s=args.window_s, hop_s=args.hop_s)
    version = args.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    fitted = train(recordings, fz, plan, version=version, default_shaft_rpm=args.shaft_rpm)
    x = feature_matrix(
        recordings[0], Featurizer(fz), plan, shaft_rpm=recordings[0].shaft_rpm or args.shaft_rpm
    )
    return _write_checked(fitted, x, Path(args.out))


def _write_checked(fitted: Any, x: Any, out: Path) -> int:
    """Export, check that onnxruntime scores `x` like the numpy reference, write, summarise."""
    import numpy as np

    from edge.featurizer import FEATURE_NAMES
    from edge.inference import Scorer

    data = fitted.to_onnx().SerializeToString()
    got = Scorer.unsafe_from_unsigned_bytes(data).score(x)
    want = fitted.score(x)
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
        raise ModelUsageError("exported ONNX graph disagrees with the fitted model; not written")
    out.write_bytes(data)
    report: dict[str, object] = {
        "out": str(out),
        "version": fitted.version,
        "features": list(FEATURE_NAMES),
        "threshold": fitted.threshold,
        "summary": dict(fitted.summary),
    }
    if fitted.prognostics is not None:
        report["prognostics"] = json.loads(fitted.prognostics)
    print(json.dumps(report, indent=2))
    return 0


def _featurize_runs(paths: list[str], fz: Any, default_rpm: float) -> list[Any]:
    from edge.featurizer import Featurizer
    from edge.run_recording import load_run_recording, run_features

    featurizer = Featurizer(fz)
    runs = []
    for p in paths:
        rec = load_run_recording(Path(p))
        if rec.sample_rate_hz != fz.sample_rate_hz:
            raise ModelUsageError(f"{p}: {rec.sample_rate_hz} Hz; the others {fz.sample_rate_hz}")
        runs.append((rec, run_features(rec, featurizer, shaft_rpm=rec.shaft_rpm or default_rpm)))
    return runs


def _train_run_to_failure(args: argparse.Namespace) -> int:
    from edge.bearing import BEARINGS
    from edge.featurizer import FeaturizerSettings
    from edge.health import HealthSettings
    from edge.run_recording import load_run_recording
    from edge.training import fit_run_to_failure

    first = load_run_recording(Path(args.run_to_failure[0]))
    fz = FeaturizerSettings(
        sample_rate_hz=first.sample_rate_hz,
        bearing=BEARINGS[args.bearing or "pronostia"],
        envelope_band_hz=(args.band_low, args.band_high),
    )
    runs = _featurize_runs(args.run_to_failure, fz, args.shaft_rpm)
    windows = {round(rec.window_s, 9) for rec, _ in runs}
    if len(windows) != 1:
        raise ModelUsageError(f"the runs' snapshots differ in length: {sorted(windows)} s")
    version = args.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    fitted = fit_run_to_failure(
        [f for _, f in runs],
        fz,
        window_s=windows.pop(),
        version=version,
        sources=[rec.source for rec, _ in runs],
        health=HealthSettings(baseline_s=args.baseline_s),
        conditions=[rec.condition for rec, _ in runs],
    )
    f0 = runs[0][1]
    return _write_checked(fitted, f0.model_inputs[:, 0], Path(args.out))


def _cmd_score(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from edge.inference import Scorer
    from edge.model_signing import MAX_MODEL_BYTES
    from edge.training import featurizer_settings_from_summary

    model = Path(args.model)
    if model.stat().st_size > MAX_MODEL_BYTES:
        raise ModelUsageError(f"{model} is larger than {MAX_MODEL_BYTES} bytes")
    # Offline analysis of the user's own file: no signature is needed to replay a recording
    # (a gateway never runs an unverified model).
    scorer = Scorer.unsafe_from_unsigned_bytes(model.read_bytes())
    prog = scorer.prognostics
    if prog is None:
        raise ModelUsageError(
            f"{model}: no prognostics in this model; train it with --run-to-failure"
        )
    if args.baseline_s is not None:
        prog = dataclasses.replace(
            prog, health=dataclasses.replace(prog.health, baseline_s=args.baseline_s)
        )
    fz = featurizer_settings_from_summary(scorer.training_summary)
    ((rec, feats),) = _featurize_runs([args.recording], fz, args.shaft_rpm)
    want_window = scorer.training_summary.get("window_s")
    if isinstance(want_window, float | int) and abs(rec.window_s - float(want_window)) > 1e-9:
        raise ModelUsageError(
            f"{args.recording}: snapshots of {rec.window_s} s; the model was fitted on "
            f"{want_window} s windows"
        )
    n, axes, d = feats.model_inputs.shape
    scores = scorer.score(feats.model_inputs.reshape(n * axes, d)).reshape(n, axes).max(axis=1)
    tracker = prog.tracker(rec.condition)
    out = sys.stdout
    first: dict[str, float] = {}
    last: dict[str, object] = {}
    for t, score, row in zip(feats.t_s, scores, feats.log_rms, strict=True):
        fields = tracker.update(float(t), row).fields()
        last = {"t_s": round(float(t), 3), "score": round(float(score), 4), **fields}
        if fields["alarm"] != "none":
            first.setdefault(str(fields["alarm"]), float(t))
        if args.json:
            out.write(json.dumps(last, allow_nan=False) + "\n")
    if not args.json:
        print(
            json.dumps(
                {
                    "recording": args.recording,
                    "snapshots": int(np.size(feats.t_s)),
                    "first_alarm_s": first,
                    "last": last,
                },
                indent=2,
            )
        )
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from edge.model_signing import sign_model

    model = Path(args.model)
    password = read_secret_file(Path(args.key_password_file)) if args.key_password_file else None
    bundle = sign_model(
        model.read_bytes(),
        artifact=model.name,
        signer_cert_pem=Path(args.cert).read_bytes(),
        signer_key_pem=Path(args.key).read_bytes(),
        chain_pem=Path(args.chain).read_bytes() if args.chain else b"",
        now=datetime.now(UTC),
        key_password=password,
        release=args.release or 0,
        rollback_of=args.rollback_of or 0,
    )
    if not args.release:
        print(
            "idmz model: no --release: gateways that already run a model will refuse this one",
            file=sys.stderr,
        )
    out = Path(args.out) if args.out else model.with_name(model.name + ".sig")
    out.write_bytes(bundle)
    print(f"idmz model: wrote {out}", file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from edge.model_signing import load_trust, load_verified_model

    model = Path(args.model)
    sig = Path(args.signature) if args.signature else model.with_name(model.name + ".sig")
    trust = load_trust(
        [Path(p) for p in args.root],
        [Path(p) for p in args.crl or []],
        unsafe_skip_revocation=args.unsafe_skip_revocation,
    )
    v = load_verified_model(model, sig, trust, now=datetime.now(UTC))
    print(
        json.dumps(
            {
                "version": v.version,
                "release": v.release,
                "rollback_of": v.rollback_of,
                "sha256": v.sha256,
                "signer": v.signer,
                "signer_fingerprint": v.signer_fingerprint,
                "threshold": v.threshold,
                "features": list(v.feature_names),
            },
            indent=2,
        )
    )
    return 0


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `model` command group to the top-level parser."""
    model = sub.add_parser("model", help=summary, description=(__doc__ or "").splitlines()[0])
    cmds = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)

    text = "fit the anomaly model on healthy vibration and export ONNX"
    p = cmds.add_parser("train", help=text, description=text)
    p.add_argument("--healthy", nargs="+", metavar="FILE", help="healthy recordings (.npy, .mat)")
    p.add_argument(
        "--run-to-failure",
        nargs="+",
        metavar="FILE",
        help="whole run-to-failure recordings (.npz: acc_horiz, acc_vert, fs, t_rel_s; "
        'meta.operating_condition "1800 rpm, 4000 N" gives the RUL speed and load)',
    )
    p.add_argument(
        "--baseline-s",
        type=float,
        default=600.0,
        help="with --run-to-failure: the commissioning baseline a gateway learns (s)",
    )
    p.add_argument(
        "--bearing",
        choices=["skf-6205", "pronostia"],
        help="bearing geometry (default skf-6205; pronostia with --run-to-failure)",
    )
    p.add_argument(
        "--from-simulator", type=float, metavar="SECONDS", help="healthy plant-model signal"
    )
    p.add_argument("--sample-rate", type=float, default=12000.0, help="rate of the files (Hz)")
    p.add_argument("--target-rate", type=float, default=12000.0, help="the gateway channel's rate")
    p.add_argument("--shaft-rpm", type=float, default=1797.0, help="when a file does not say")
    p.add_argument("--window-s", type=float, default=1.0)
    p.add_argument("--hop-s", type=float, default=0.25)
    p.add_argument("--band-low", type=float, default=2000.0, help="envelope band low edge (Hz)")
    p.add_argument("--band-high", type=float, default=5000.0, help="envelope band high edge (Hz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", help="model version (default: UTC timestamp)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_train)

    text = "replay a run-to-failure recording: score, health, alarm level and RUL per snapshot"
    p = cmds.add_parser("score", help=text, description=text)
    p.add_argument("--model", required=True, help="a model trained with --run-to-failure")
    p.add_argument("--recording", required=True, help=".npz: acc_horiz, acc_vert, fs, t_rel_s")
    p.add_argument("--json", action="store_true", help="one JSON object per snapshot, in order")
    p.add_argument(
        "--baseline-s",
        type=float,
        help="commissioning baseline learned from the recording's start (default: the model's)",
    )
    p.add_argument("--shaft-rpm", type=float, default=1800.0, help="when the file does not say")
    p.set_defaults(func=_cmd_score)

    text = "sign a model with a model-signer certificate (writes <model>.sig)"
    p = cmds.add_parser("sign", help=text, description=text)
    p.add_argument("--model", required=True)
    p.add_argument("--cert", required=True, help="the model-signer certificate (PEM)")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--key-password-file", help="a 0600 file with the key's password")
    p.add_argument("--chain", help="intermediate CA certificate(s) (PEM)")
    p.add_argument("--out", help="bundle path (default <model>.sig)")
    p.add_argument(
        "--release",
        type=int,
        help="release number, higher than every model the gateways ran before (signed)",
    )
    p.add_argument(
        "--rollback-of",
        type=int,
        metavar="RELEASE",
        help="sign a deliberate rollback replacing RELEASE (needs a rollback signer)",
    )
    p.set_defaults(func=_cmd_sign)

    text = "verify a model's signature bundle as a gateway would"
    p = cmds.add_parser("verify", help=text, description=text)
    p.add_argument("--model", required=True)
    p.add_argument("--signature", help="bundle path (default <model>.sig)")
    p.add_argument("--root", required=True, nargs="+", help="trusted root certificate(s)")
    p.add_argument("--crl", nargs="*", help="CRL(s) of the issuing CA")
    p.add_argument("--unsafe-skip-revocation", action="store_true")
    p.set_defaults(func=_cmd_verify)
