"""`idmz release`: signed models and gateway configuration, pulled by the gateways (ADR 0100).

    idmz release init --signer-cert signer.pem --signer-key signer.key --root-key-dir /media/usb
    idmz release publish --kind model --file model.onnx --to acme/plant1/press/line1 \\
        --stage canary:1 --reason "retrained on week 49"
    idmz release promote --kind model --to acme/plant1/press/line1 --reason "canary ran a shift"
    idmz release rollback --kind model --to acme/plant1/press/line1 --reason "false alarms"
    idmz release status [--json]
    mosquitto_sub ... -t '+/+/+/+/+/+/status' -F %p | idmz release reports --from -
    idmz release serve --config release.toml     (or --cert server.pem --key server.key)
    idmz release signers --cert new-signer.pem --root-key /media/usb/root-key.pem

The repository lives in the IDMZ under ``<home>/release/repository``; ``serve`` answers gateways
over HTTPS with mutual TLS, read-only. A model is signed (ADR 0061 bundle, with the release
number, ADR 0066) with the release signer's key, the same key that signs the TUF targets.
Every change needs ``--reason`` and is in the audit log; docs/release.md is the guide.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bedrock.errors as category
from idmz.home import Home, resolve_home

if TYPE_CHECKING:
    from audit.events import AuditEvent
    from release.records import ReleaseRecord
    from release.repository import ReleaseRepository

_log = logging.getLogger("idmz.release")
DEFAULT_PORT = 8445


class ReleaseUsageError(category.UsageError):
    """The command line asked for something impossible (exit code 2)."""


def _home(args: argparse.Namespace) -> Home:
    return resolve_home(args.home)


def _release_dir(home: Home) -> Path:
    return home.root / "release"


def _repo(home: Home) -> ReleaseRepository:
    from release.repository import ReleaseRepository

    return ReleaseRepository(_release_dir(home) / "repository")


def _signer_files(home: Home, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    from idmz.release_signers import signer_files

    return signer_files(home, args.signer_cert, args.signer_key, args.signer_chain)


def _model_signer(home: Home, args: argparse.Namespace, data: bytes) -> Any:
    from idmz.release_signers import model_signer

    return model_signer(data, *_signer_files(home, args))


def _targets_signer(home: Home, args: argparse.Namespace) -> Any:
    from release.keys import load_signer

    return load_signer(_signer_files(home, args)[1])


def _fleet(home: Home, args: argparse.Namespace) -> list[str]:
    from idmz.release_signers import fleet

    return fleet(home, Path(args.fleet) if args.fleet else None)


def _event(action: str, resource: str, outcome: str, reason: str, **details: Any) -> AuditEvent:
    from audit.events import Outcome
    from idmz.events import make_event

    return make_event(action, resource, Outcome(outcome), reason, **details)


def _audited(home: Home, action: str, args: argparse.Namespace, change: Any) -> ReleaseRecord:
    """Run ``change()``; record it, or its refusal, in the audit log (change control)."""
    from idmz.events import record
    from release.errors import ReleaseError

    resource = f"{args.kind}/{args.to}"
    try:
        rec: ReleaseRecord = change()
    except ReleaseError as exc:
        record(
            home, [_event("release.change.refused", resource, "denied", str(exc), attempted=action)]
        )
        raise
    action_names = {
        "published": "release.change.published",
        "promoted": "release.change.promoted",
        "rolled_back": "release.change.rolled_back",
    }
    record(
        home,
        [
            _event(
                action_names[rec.change], resource, "success", rec.reason,
                release=rec.release, sha256=rec.sha256, stage=rec.stage, length=rec.length,
                canary=",".join(rec.canary) or None, rollback_of=rec.rollback_of or None,
                version=rec.version or None,
            )
        ],
    )  # fmt: skip
    print(json.dumps({k: v for k, v in _record_dict(rec).items() if k != "signature"}, indent=2))
    return rec


def _record_dict(rec: ReleaseRecord) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(rec)


def _cmd_init(args: argparse.Namespace) -> int:
    from bedrock.files import write_atomic
    from release.keys import load_signer
    from release.records import Expiry
    from release.repository import ReleaseRepository

    home = _home(args).ensure()
    cert, key, chain = _signer_files(home, args)
    expiry = Expiry(timestamp_s=int(args.timestamp_hours * 3600))
    repo = ReleaseRepository.create(
        _release_dir(home) / "repository",
        root_key_dir=Path(args.root_key_dir),
        signer_certs=[cert.read_bytes()],
        targets_signer=load_signer(key),
        expiry=expiry,
    )
    kept = {"cert": str(cert.resolve()), "key": str(key.resolve()), "chain": str(chain.resolve())}
    write_atomic(_release_dir(home) / "signer.json", json.dumps(kept).encode(), 0o600)
    root = _release_dir(home) / "trusted-root.json"
    write_atomic(root, repo.trusted_root())
    print(f"release repository created at {repo.root}")
    print(f"gateways pin {root} (release.trusted_root in gateway.toml)")
    print(f"the root key is in {args.root_key_dir}: take it offline now")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from policies.release import ReleaseKind, StageRequest

    home = _home(args)
    data = Path(args.file).read_bytes()
    kind = ReleaseKind(args.kind)
    stage = StageRequest.parse(args.stage)
    version = ""
    if kind is ReleaseKind.MODEL:
        sign = _model_signer(home, args, data)
        version = _model_version(data)
    else:
        sign = lambda _n: ""  # noqa: E731 - a config is covered by the targets signature
    repo = _repo(home)
    fleet = _fleet(home, args) if stage.count else []
    _audited(
        home, "publish", args,
        lambda: repo.publish(
            kind, args.to, stage, data, fleet=fleet, sign=sign, reason=args.reason,
            actor=_actor(), targets_signer=_targets_signer(home, args), version=version,
        ),
    )  # fmt: skip
    return 0


def _model_version(data: bytes) -> str:
    import onnx

    from edge.anomaly_model import model_metadata

    try:
        return str(model_metadata(onnx.load_from_string(data)).get("model_version", ""))
    except Exception as exc:
        raise ReleaseUsageError(f"--file is not an ONNX model: {exc}") from exc


def _actor() -> str:
    from idmz.operator import operator_actor

    return operator_actor()


def _cmd_promote(args: argparse.Namespace) -> int:
    from policies.release import ReleaseKind

    home = _home(args)
    repo = _repo(home)
    _audited(
        home, "promote", args,
        lambda: repo.promote(
            ReleaseKind(args.kind), args.to, reason=args.reason, actor=_actor(),
            targets_signer=_targets_signer(home, args),
        ),
    )  # fmt: skip
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from policies.release import ReleaseKind

    home = _home(args)
    repo = _repo(home)
    kind = ReleaseKind(args.kind)

    def sign(release: int, data: bytes) -> str:
        # the artifact offered again is re-signed for its new, higher release number
        return str(_model_signer(home, args, data)(release)) if kind is ReleaseKind.MODEL else ""

    _audited(
        home, "rollback", args,
        lambda: repo.rollback(
            kind, args.to, sign=sign, reason=args.reason, actor=_actor(),
            targets_signer=_targets_signer(home, args),
        ),
    )  # fmt: skip
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from release.fetchlog import FetchLog, fleet_status

    home = _home(args)
    repo = _repo(home)
    rows = fleet_status(FetchLog(_release_dir(home) / "fetch.jsonl").entries(), repo.history())
    from idmz.release_signers import load_reports

    running = load_reports(_release_dir(home))["running"]
    for row in rows:
        row["running"] = running.get(str(row["identity"]))
    current = repo.current()
    offered = {
        p: {"release": t.release, "stage": t.stage.value, "canary": list(t.canary)}
        for p, t in current.items()
    }
    if args.json:
        print(json.dumps({"offered": offered, "gateways": rows}, indent=2))
        return 0
    print("offered:")
    for path, t in sorted(current.items()):
        canary = f" canary {','.join(t.canary)}" if t.canary else ""
        print(f"  {path}: release {t.release}{canary}")
    print("gateways (site/area/line, last release fetched per kind, last seen):")
    for r in rows:
        print(
            f"  {r['site']}/{r['area']}/{r['line']}  {r['identity']}  model {r['model']}  "
            f"config {r['config']}  {r['last_seen']}  runs {r['running'] or '(no report)'}"
        )
    return 0


def _cmd_reports(args: argparse.Namespace) -> int:
    from idmz.release_signers import record_reports

    home = _home(args)
    if args.source == "-":
        n = record_reports(home, _release_dir(home), sys.stdin)
    else:
        with Path(args.source).open() as fh:
            n = record_reports(home, _release_dir(home), fh)
    print(f"{n} gateway release result(s) recorded in the audit log")
    return 0


def _cmd_signers(args: argparse.Namespace) -> int:
    home = _home(args)
    certs = [Path(c).read_bytes() for c in args.cert]
    version = _repo(home).set_signers(certs, root_key=Path(args.root_key))
    from idmz.events import record

    record(
        home,
        [_event("release.signers.changed", "root", "success", args.reason, root_version=version)],
    )
    print(f"root version {version}: {len(certs)} release signer(s)")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from idmz.release_serve import serve_repository
    from policies.release_deployment import parse_release_deployment

    home = _home(args)
    opts = vars(args).copy()
    if args.config:  # the file's settings, relative paths from its directory; options win
        path = Path(args.config)
        d = parse_release_deployment(path.read_text(), str(path))
        for key in ("cert", "key", "client_ca", "crl"):
            value = getattr(d, key)
            if opts[key] is None and value is not None:
                opts[key] = str(path.parent / value)
        opts["host"] = opts["host"] or d.host
        opts["port"] = d.port if opts["port"] is None else opts["port"]
        opts["unsafe_skip_revocation"] |= d.unsafe_skip_revocation
    if not opts["cert"] or not opts["key"]:
        raise ReleaseUsageError("give --cert and --key, or --config release.toml")
    return serve_repository(
        home, _release_dir(home), cert=Path(opts["cert"]), key=Path(opts["key"]),
        client_ca=opts["client_ca"], crl=opts["crl"], host=opts["host"] or "127.0.0.1",
        port=DEFAULT_PORT if opts["port"] is None else opts["port"],
        unsafe_skip_revocation=opts["unsafe_skip_revocation"],
    )  # fmt: skip


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `release` command group to the top-level parser."""
    rel = sub.add_parser("release", help=summary, description=(__doc__ or "").splitlines()[0])
    cmds = rel.add_subparsers(dest="release_command", metavar="SUBCOMMAND", required=True)

    def signer_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--signer-cert", help="release signer certificate (model-signer profile)")
        p.add_argument("--signer-key", help="its private key (PEM, 0600)")
        p.add_argument("--signer-chain", help="its issuing chain (default <home>/ca/issuing.pem)")

    def change_options(p: argparse.ArgumentParser, *, file: bool = False) -> None:
        p.add_argument("--kind", choices=["model", "config"], required=True)
        p.add_argument(
            "--to", required=True, metavar="PREFIX", help="identity prefix (a line: 4 levels)"
        )
        if file:
            p.add_argument("--file", required=True, help="the model (ONNX) or config (JSON)")
            p.add_argument("--stage", default="all", help="canary:N or all (default all)")
            p.add_argument(
                "--fleet", help="identities a canary picks from (default: the CA ledger)"
            )
        p.add_argument("--reason", required=True, help="why (the change-control record)")
        signer_options(p)

    text = "create the repository: offline root key, online key, the first release signer"
    p = cmds.add_parser("init", help=text, description=text)
    signer_options(p)
    p.add_argument("--root-key-dir", required=True, help="where the root key is written (offline)")
    p.add_argument("--timestamp-hours", type=float, default=24.0, help="timestamp validity")
    p.set_defaults(func=_cmd_init)

    text = "offer a model or config to the gateways under a prefix (all, or a canary)"
    p = cmds.add_parser("publish", help=text, description=text)
    change_options(p, file=True)
    p.set_defaults(func=_cmd_publish)

    text = "give the canary of a prefix to every gateway under it"
    p = cmds.add_parser("promote", help=text, description=text)
    change_options(p)
    p.set_defaults(func=_cmd_promote)

    text = "offer again what ran before the latest change, under a new release"
    p = cmds.add_parser("rollback", help=text, description=text)
    change_options(p)
    p.set_defaults(func=_cmd_rollback)

    text = "what is offered, and which gateway fetched which release"
    p = cmds.add_parser("status", help=text, description=text)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)

    text = "record gateways' release results from their status messages (IT side)"
    p = cmds.add_parser("reports", help=text, description=text)
    p.add_argument(
        "--from", dest="source", required=True, help="JSON lines of status messages, - for stdin"
    )
    p.set_defaults(func=_cmd_reports)

    text = "serve the repository to gateways over HTTPS with mutual TLS (read-only)"
    p = cmds.add_parser("serve", help=text, description=text)
    p.add_argument("--config", help="release.toml (docs/release.md); options override it")
    p.add_argument("--cert", help="server certificate + chain (server profile)")
    p.add_argument("--key", help="its private key")
    p.add_argument(
        "--client-ca", help="CA chain for gateway certificates (default <home>/ca/chain.pem)"
    )
    p.add_argument("--crl", help="the CA's CRL (default <home>/ca/crl.pem)")
    p.add_argument("--unsafe-skip-revocation", action="store_true")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"listen port (default {DEFAULT_PORT}; 0: any)")
    p.set_defaults(func=_cmd_serve)

    text = "replace the release signers (new root version, signed with the offline root key)"
    p = cmds.add_parser("signers", help=text, description=text)
    p.add_argument("--cert", action="append", required=True, help="a signer certificate (repeat)")
    p.add_argument("--root-key", required=True)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=_cmd_signers)
