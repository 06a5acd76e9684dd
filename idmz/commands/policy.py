"""`idmz policy`: the segmentation policy from the command line.

    idmz policy validate deploy/policy/plant.toml          check a document, print its hash
    idmz policy render --policy plant.toml --devices devices.toml --out DIR
    idmz policy check --deployment DIR [--json]            find what would bypass the policy
    idmz policy evaluate --policy plant.toml --identity acme/plant1/... --topic T

The devices file (TOML or JSON) lists registered identities, one path each:
``devices = ["acme/plant1/stamping/line1/cell1/press-01", ...]`` and
``consumers = ["acme/it/historian", ...]``. Device classes come from the policy.
Exit codes: 0 ok, 1 a check failed or a decision was a refusal, 2 invalid input.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bedrock.errors as category
from bedrock.files import write_atomic
from idmz.home import resolve_home

if TYPE_CHECKING:
    from policies.broker_config import Registry
    from policies.document import Policy

POLICY_NAMES = ("policy.toml", "policy.yaml", "policy.yml")
MAX_FILE_BYTES = 16 * 1024 * 1024


class PolicyUsageError(category.UsageError):
    """The command line or an input file is unusable (exit code 2)."""


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyUsageError(f"cannot read {what} {path}: {exc}") from exc


def _load(path: Path) -> Policy:
    from policies import load_policy

    return load_policy(_read_text(path, "policy"), source=str(path))


def _write_atomic(path: Path, text: str) -> None:
    """A rendered policy and broker configuration are what the brokers run on: durable."""
    write_atomic(path, text.encode("utf-8"), 0o644, durable=True)


def load_registry(path: Path) -> Registry:
    """Read a devices file: TOML or JSON with ``devices`` and ``consumers`` lists of paths."""
    from pki.errors import MalformedIdentityError
    from pki.identity import ConsumerIdentity, DeviceIdentity
    from policies.broker_config import Registry

    text = _read_text(path, "devices file")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise PolicyUsageError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}"
        ) from exc
    unknown = set(data) - {"devices", "consumers"}
    if unknown or not isinstance(data.get("devices", []), list):
        raise PolicyUsageError(f"{path}: expected lists 'devices' and 'consumers' only")
    try:
        devices = tuple(DeviceIdentity.parse(p) for p in data.get("devices", []))
        consumers = tuple(ConsumerIdentity.parse(p) for p in data.get("consumers", []))
    except MalformedIdentityError as exc:
        raise PolicyUsageError(f"{path}: {exc}") from exc
    return Registry(devices, consumers)


# -- commands -----------------------------------------------------------------------------


def _cmd_validate(args: argparse.Namespace) -> int:
    policy = _load(Path(args.file))
    summary = {
        "file": args.file,
        "enterprise": policy.enterprise,
        "content_sha256": policy.content_hash,
        "device_classes": {n: list(c.publish) for n, c in policy.device_classes.items()},
        "assignments": {p.path: c for p, c in policy.assignments.items()},
        "consumers": {n: [p.path for p in c.subscribe] for n, c in policy.consumers.items()},
        "relay": {
            "identity": policy.relay.identity.path,
            "on_audit_failure": str(policy.relay.on_audit_failure),
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.file}: valid policy for enterprise {policy.enterprise!r}")
        print(f"content sha256: {policy.content_hash}")
        for name, topics in summary["device_classes"].items():
            print(f"  class {name}: publishes {', '.join(topics) or 'nothing'}")
        for prefix, cls in summary["assignments"].items():
            print(f"  {prefix}/... -> {cls}")
        for name, prefixes in summary["consumers"].items():
            print(
                f"  consumer {policy.enterprise}/it/{name}: reads {', '.join(prefixes) or 'nothing'}"
            )
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from policies.broker_config import BrokerSettings, TlsFiles, render_brokers

    home = resolve_home(args.home)
    policy_path = Path(args.policy)
    policy = _load(policy_path)
    registry = load_registry(Path(args.devices))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    def path(value: str | None, default: Path) -> str:
        return str(Path(value).resolve() if value else default.resolve())

    from pki.publication import CAPublication

    published, tls_dir = CAPublication(home.ca_dir), home.relay_dir / "tls"

    def settings(zone: str, port: int, cert: str | None, key: str | None) -> BrokerSettings:
        return BrokerSettings(
            port=port,
            tls=TlsFiles(
                cafile=path(args.cafile, published.chain),
                certfile=path(cert, tls_dir / f"{zone}-broker.pem"),
                keyfile=path(key, tls_dir / f"{zone}-broker.key"),
                crlfile=path(args.crlfile, published.crl_pem),
            ),
            acl_file=str(out / f"{zone}-broker.acl"),
            bind_address=args.bind,
            persistence_dir=str(Path(args.persistence_dir).resolve() / zone)
            if args.persistence_dir
            else None,
            log_dest=(f"file {Path(args.log_dir).resolve() / f'{zone}-broker.log'}",)
            if args.log_dir
            else ("stderr",),
            run_as_user=args.run_as_user,
        )

    rendered = render_brokers(
        policy,
        registry,
        ot=settings("ot", args.ot_port, args.ot_cert, args.ot_key),
        it=settings("it", args.it_port, args.it_cert, args.it_key),
    )
    suffix = policy_path.suffix if policy_path.suffix in (".toml", ".yaml", ".yml") else ".toml"
    _write_atomic(out / f"policy{suffix}", _read_text(policy_path, "policy"))
    for broker in (rendered.ot, rendered.it):
        _write_atomic(out / f"{broker.zone}-broker.conf", broker.config)
        _write_atomic(out / f"{broker.zone}-broker.acl", broker.acl)
    print(
        f"rendered policy sha256:{policy.content_hash} for {len(registry.devices)} device(s) into {out}"
    )
    for note in rendered.notes:
        print(f"  note: {note}")
    return 0


def gather_deployment(directory: Path) -> Any:
    """Read a deployment directory into a `policies.deployment.Deployment` (the only I/O)."""
    from policies.deployment import BrokerConfigFile, Deployment, referenced_paths

    if not directory.is_dir():
        raise PolicyUsageError(f"deployment directory {directory} does not exist")
    policy_name = policy_text = None
    for name in POLICY_NAMES:
        if (directory / name).exists():
            policy_name, policy_text = name, _read_text(directory / name, "policy")
            break
    configs = tuple(
        BrokerConfigFile(p.name, _read_text(p, "broker config"))
        for p in sorted(directory.glob("*.conf"))
    )
    files: dict[str, bytes] = {}
    for cfg in configs:
        for ref in referenced_paths(cfg.text):
            target = Path(ref) if Path(ref).is_absolute() else directory / ref
            if target.is_file() and target.stat().st_size <= MAX_FILE_BYTES:
                files[ref] = target.read_bytes()
    referenced = {(Path(r) if Path(r).is_absolute() else directory / r).resolve() for r in files}
    extra: dict[str, bytes] = {}
    for p in sorted(directory.rglob("*")):
        if p.suffix not in (".pem", ".crt", ".cer") or not p.is_file() or p.resolve() in referenced:
            continue
        data = p.read_bytes()[:MAX_FILE_BYTES]
        if b"-----BEGIN CERTIFICATE-----" in data:
            extra[str(p.relative_to(directory))] = data
    from policies import RELEASE_DEPLOYMENT_FILE as FILE_NAME

    release_file = directory / FILE_NAME
    release = (
        BrokerConfigFile(FILE_NAME, _read_text(release_file, "release config"))
        if release_file.is_file()
        else None
    )
    return Deployment(policy_name, policy_text, configs, files, extra, release)


def _cmd_check(args: argparse.Namespace) -> int:
    from policies.deployment import check_deployment

    now = datetime.now(UTC)
    if args.now:
        now = datetime.fromisoformat(args.now)
        if now.tzinfo is None:
            raise PolicyUsageError("--now needs a timezone, e.g. 2026-11-22T10:00:00+00:00")
    report = check_deployment(
        gather_deployment(Path(args.deployment)),
        now=now,
        crl_warn_before=timedelta(hours=args.crl_warn_hours),
    )
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return 0 if report.passed else 1


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pki.errors import MalformedIdentityError
    from pki.identity import DeviceIdentity, parse_spiffe
    from policies import Action, check_payload, evaluate

    policy = _load(Path(args.policy))
    try:
        principal = parse_spiffe(
            args.identity if args.identity.startswith("spiffe://") else "spiffe://" + args.identity
        )
    except MalformedIdentityError as exc:
        raise PolicyUsageError(str(exc)) from exc
    decision = evaluate(policy, principal, Action(args.action), args.topic)
    if decision.allowed and args.payload:
        if not isinstance(principal, DeviceIdentity):
            raise PolicyUsageError("--payload applies to a device's publish")
        decision = check_payload(policy, principal, args.topic, Path(args.payload).read_bytes())
    verdict = "ALLOW" if decision.allowed else "DENY"
    if args.json:
        print(json.dumps({"allowed": decision.allowed, "reason_code": str(decision.reason_code),
                          "reason": decision.reason, "policy_sha256": policy.content_hash}))  # fmt: skip
    else:
        print(f"{verdict} {decision.reason_code}: {decision.reason}")
    return 0 if decision.allowed else 1


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `policy` command group to the top-level parser."""
    group = sub.add_parser("policy", help=summary, description=__doc__.splitlines()[0] if __doc__ else "",
                           epilog="\n".join(__doc__.splitlines()[1:]) if __doc__ else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    cmds = group.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)

    p = cmds.add_parser("validate", help="validate a policy document and print its content hash")
    p.add_argument("file", help="policy document (.toml, .yaml)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=_cmd_validate)

    p = cmds.add_parser("render", help="render OT/IT Mosquitto configs and ACLs into a directory")
    p.add_argument("--policy", required=True, help="policy document")
    p.add_argument("--devices", required=True, help="registered identities (TOML or JSON)")
    p.add_argument("--out", required=True, help="output directory (the deployment)")
    p.add_argument("--ot-port", type=int, default=8883, help="OT-facing listener port (8883)")
    p.add_argument("--it-port", type=int, default=8884, help="IT-facing listener port (8884)")
    p.add_argument("--bind", help="listen address (default: every interface)")
    p.add_argument("--cafile", help="client CA bundle (default <home>/ca/chain.pem)")
    p.add_argument("--crlfile", help="CRL (default <home>/ca/crl.pem)")
    p.add_argument(
        "--ot-cert", help="OT broker certificate (default <home>/relay/tls/ot-broker.pem)"
    )
    p.add_argument("--ot-key", help="OT broker key (default <home>/relay/tls/ot-broker.key)")
    p.add_argument(
        "--it-cert", help="IT broker certificate (default <home>/relay/tls/it-broker.pem)"
    )
    p.add_argument("--it-key", help="IT broker key (default <home>/relay/tls/it-broker.key)")
    p.add_argument("--persistence-dir", help="broker persistence under DIR/<zone> (default: off)")
    p.add_argument("--log-dir", help="broker logs to DIR/<zone>-broker.log (default: stderr)")
    p.add_argument("--run-as-user", help="user Mosquitto switches to when started as root")
    p.set_defaults(func=_cmd_render)

    p = cmds.add_parser("check", help="check a deployment; exit 1 on any error finding")
    p.add_argument("--deployment", required=True, help="directory written by `idmz policy render`")
    p.add_argument("--json", action="store_true", help="JSON report")
    p.add_argument("--now", help="evaluate dates as of this ISO 8601 time (default: now)")
    p.add_argument(
        "--crl-warn-hours",
        type=float,
        default=12.0,
        help="warn (crl.expiring) when a CRL's nextUpdate is closer than this (default 12)",
    )
    p.set_defaults(func=_cmd_check)

    p = cmds.add_parser("evaluate", help="explain one decision (exit 1 when refused)")
    p.add_argument("--policy", required=True)
    p.add_argument("--identity", required=True, help="identity path or spiffe:// ID")
    p.add_argument("--action", choices=("publish", "subscribe"), default="publish")
    p.add_argument("--topic", required=True)
    p.add_argument("--payload", help="also check this payload file (device publish)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)
