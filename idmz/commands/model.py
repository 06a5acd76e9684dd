"""`idmz model`: train, sign and verify the edge anomaly model.

    idmz model train --healthy normal.npy --sample-rate 12000 --out model.onnx
    idmz model train --from-simulator 120 --out model.onnx      healthy data from the plant model
    idmz model sign --model model.onnx --cert signer.pem --key signer.key --chain chain.pem
    idmz model verify --model model.onnx --root root.pem --crl crl.pem

Train fits only on healthy data. Sign writes ``<model>.sig`` (JSON: SHA-256, signature, signer
chain); gateways refuse a model whose signature or signer certificate does not verify.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from idmz.home import read_secret_file


class ModelUsageError(Exception):
    """The command line asked for something impossible (exit code 2)."""


def _cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from edge.bearing import SKF_6205
    from edge.featurizer import FEATURE_NAMES, FeaturizerSettings
    from edge.inference import Scorer
    from edge.plant import LineSettings
    from edge.recordings import load_recording
    from edge.training import WindowPlan, feature_matrix, simulator_recording, train

    if not args.healthy and not args.from_simulator:
        raise ModelUsageError("give --healthy FILES... or --from-simulator SECONDS")
    fs = args.target_rate
    recordings = [
        load_recording(Path(p), sample_rate_hz=args.sample_rate, target_rate_hz=fs)
        for p in args.healthy or []
    ]
    if args.from_simulator:
        line = LineSettings(sample_rate_hz=fs, shaft_rpm=args.shaft_rpm)
        recordings.append(simulator_recording(args.from_simulator, seed=args.seed, settings=line))
    fz = FeaturizerSettings(
        sample_rate_hz=fs, bearing=SKF_6205, envelope_band_hz=(args.band_low, args.band_high)
    )
    plan = WindowPlan(window_s=args.window_s, hop_s=args.hop_s)
    version = args.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    fitted = train(recordings, fz, plan, version=version, default_shaft_rpm=args.shaft_rpm)
    data = fitted.to_onnx().SerializeToString()
    # Self-check: onnxruntime scores the training windows like the numpy reference.
    from edge.featurizer import Featurizer

    x = feature_matrix(
        recordings[0], Featurizer(fz), plan, shaft_rpm=recordings[0].shaft_rpm or args.shaft_rpm
    )
    got = Scorer.unsafe_from_unsigned_bytes(data).score(x)
    want = fitted.score(x)
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3):
        raise ModelUsageError("exported ONNX graph disagrees with the fitted model; not written")
    out = Path(args.out)
    out.write_bytes(data)
    print(
        json.dumps(
            {
                "out": str(out),
                "version": version,
                "features": list(FEATURE_NAMES),
                "threshold": fitted.threshold,
                "summary": dict(fitted.summary),
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
