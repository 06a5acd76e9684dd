"""`idmz provisioning`: the enrollment service and the operator's console on the CA host.

idmz provisioning init                         create the CA (if none) and print its fingerprint
idmz provisioning serve --port 8443            HTTPS API + EST, renewal over mutual TLS
idmz provisioning device add PATH              register a device
idmz provisioning group add PREFIX             an enrollment group (validity, renewal grace)
idmz provisioning token create --device PATH   one-time enrollment token (last line)
idmz provisioning token create --role operator --name NAME    operator/admin/auditor token
idmz provisioning token revoke --id JTI        deny an operator token from now on (or --token-file)
idmz provisioning revoke PATH                  revoke a device's certificates, new CRL, notify
idmz provisioning sign-request FILE --token-file T --out RESPONSE  air-gapped enrollment
idmz provisioning expiry [--json]              certificates about to expire, by line
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from bedrock.clock import utc_now
from idmz.operator import operator_actor

_log = logging.getLogger("idmz.provisioning")

# The same variable `idmz enroll` reads: a token never needs to be on a command line (S10).
ENROLLMENT_VAR = "IDMZ_ENROLL_TOKEN"
READ_FROM_HELP = "read the token from this file, or from standard input with '-'"


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `provisioning` command group to the top-level parser."""
    p = sub.add_parser(
        "provisioning",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_subparsers(dest="provisioning_command", metavar="COMMAND", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--database-url",
            metavar="URL",
            help="registry database (default: sqlite under <home>/provisioning; "
            "postgresql://user@host/db for several instances)",
        )
        parser.add_argument("--organization", default="idmz", help="organization name for a new CA")
        parser.add_argument(
            "--ca",
            choices=("local", "vault"),
            default=None,
            help="issue through the local CA under <home>/ca, or through Vault/OpenBao reached "
            "from VAULT_ADDR, VAULT_ROLE_ID, VAULT_SECRET_ID_FILE, ... (docs/pki.md section 8); "
            "default: the backend the home already uses, else local",
        )

    def notify_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--webhook", metavar="URL", help="POST JSON notifications to this URL")
        parser.add_argument(
            "--mqtt-host", help="publish notifications to this (IT-side) MQTT broker"
        )
        parser.add_argument("--mqtt-port", type=int, default=8883)
        parser.add_argument("--mqtt-topic-prefix", default="idmz/provisioning")
        parser.add_argument("--mqtt-ca", type=Path, help="CA file for the broker's TLS certificate")
        parser.add_argument("--mqtt-cert", type=Path, help="client certificate for the broker")
        parser.add_argument("--mqtt-key", type=Path, help="client key for the broker")

    s = g.add_parser(
        "init", help="create the local CA if there is none; print the root fingerprint"
    )
    common(s)
    s.set_defaults(func=cmd_init)

    s = g.add_parser("serve", help="run the enrollment service (HTTPS, EST, renewal over mTLS)")
    common(s)
    notify_args(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8443)
    s.add_argument(
        "--expiry-interval", default="1h", help="how often to scan for expiring certificates"
    )
    s.add_argument(
        "--superseded-grace",
        default="15m",
        help="how long a renewed gateway's previous certificate stays valid for the switch-over "
        "before it is revoked (reason superseded); 0s revokes it at once (ADR 0047)",
    )
    s.add_argument("--workers", type=int, default=1, help="server processes sharing the port")
    s.add_argument(
        "--server-names",
        default="",
        help="extra DNS names/IPs for the service's TLS certificate, e.g. idmz.plant1,10.0.0.5",
    )
    s.add_argument("--client-rate", type=float, default=50.0, help="requests/s per client address")
    s.add_argument("--client-burst", type=int, default=200, help="burst per client address")
    s.add_argument(
        "--max-in-flight",
        type=int,
        default=128,
        help="enrollments and renewals inside one worker at once; past it 429 with a "
        "Retry-After appointment (ADR 0137)",
    )
    s.set_defaults(func=cmd_serve)

    dev = g.add_parser("device", help="register and list devices").add_subparsers(
        dest="device_command", metavar="COMMAND", required=True
    )
    s = dev.add_parser("add", help="register a device by its identity path")
    common(s)
    s.add_argument("path", help="enterprise/site/area/line/cell/device")
    s.add_argument("--class", dest="device_class", default="gateway")
    s.add_argument("--asset", default="", help="asset metadata (tag, serial number, location)")
    s.set_defaults(func=cmd_device_add)
    s = dev.add_parser("list", help="list devices")
    common(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_device_list)

    grp = g.add_parser("group", help="enrollment groups").add_subparsers(
        dest="group_command", metavar="COMMAND", required=True
    )
    s = grp.add_parser("add", help="add an enrollment group for an identity prefix")
    common(s)
    s.add_argument("prefix", help="e.g. acme/plant1/press/line1")
    s.add_argument("--class", dest="device_class", default="gateway")
    s.add_argument("--validity-days", type=int, help="certificate lifetime (<= the policy maximum)")
    s.add_argument(
        "--grace-days", type=int, default=0, help="renewal allowed this long after expiry"
    )
    s.set_defaults(func=cmd_group_add)

    tok = g.add_parser("token", help="enrollment and operator tokens").add_subparsers(
        dest="token_command", metavar="COMMAND", required=True
    )
    s = tok.add_parser("create", help="mint a token; the token is printed on the last line")
    common(s)
    target = s.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--device", metavar="PATH", help="one-time enrollment token for this device"
    )
    target.add_argument(
        "--group", metavar="PREFIX", help="one-time enrollment token for a new device in this group"
    )
    target.add_argument(
        "--role", choices=["admin", "operator", "auditor"], help="operator API token"
    )
    s.add_argument("--name", default=None, help="operator name for --role (default: your login)")
    s.add_argument(
        "--est-password",
        action="store_true",
        help="print the token's short EST password (token id + MAC) instead of the JWT, for EST "
        "clients whose HTTP Basic header cannot hold a JWT (strongSwan pki --est); same single use",
    )
    s.add_argument(
        "--ttl",
        default=None,
        help="lifetime, e.g. 15m (enrollment default) or 8h (operator default)",
    )
    s.set_defaults(func=cmd_token_create)

    s = tok.add_parser(
        "revoke",
        help="revoke an operator token: every instance refuses it from now on (audited)",
    )
    common(s)
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", metavar="JTI", help="the token's id, as `token create` printed it")
    which.add_argument("--token-file", metavar="FILE", type=Path, help=READ_FROM_HELP)
    s.set_defaults(func=cmd_token_revoke)

    s = g.add_parser("revoke", help="revoke all certificates of a device, publish the CRL, notify")
    common(s)
    notify_args(s)
    s.add_argument("path")
    s.add_argument(
        "--reason",
        default="unspecified",
        choices=[
            "unspecified",
            "key-compromise",
            "affiliation-changed",
            "superseded",
            "cessation-of-operation",
            "privilege-withdrawn",
        ],
    )
    s.set_defaults(func=cmd_revoke)

    s = g.add_parser("sign-request", help="air-gapped: sign a gateway's offline request file")
    common(s)
    s.add_argument("request", type=Path)
    s.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        help=f"the device's one-time enrollment token: {READ_FROM_HELP}; without it, "
        f"${ENROLLMENT_VAR} (never on the command line, where the process list shows it)",
    )
    # Refused with a clear message rather than unknown, so that argparse does not take
    # `--token T` as an abbreviation of `--token-file T` and echo the token as a file name.
    s.add_argument("--token", dest="token_on_command_line", help=argparse.SUPPRESS)
    s.add_argument("--out", type=Path, required=True, help="response file to carry back")
    s.set_defaults(func=cmd_sign_request)

    s = g.add_parser("expiry", help="certificates expiring within the alert thresholds, by line")
    common(s)
    notify_args(s)
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--days", default=None, help="thresholds, e.g. 30,14,7,1 (default: certificate policy)"
    )
    s.set_defaults(func=cmd_expiry)

    s = g.add_parser("fingerprint", help="print the root CA's SHA-256 (what gateways pin)")
    common(s)
    s.set_defaults(func=cmd_fingerprint)


def _runtime(args: argparse.Namespace, **kwargs: Any) -> Any:
    from idmz.home import resolve_home
    from idmz.provisioning_runtime import open_runtime
    from idmz.vault_settings import resolve_ca_backend

    home = resolve_home(args.home)
    args.ca = resolve_ca_backend(home, getattr(args, "ca", None))
    return open_runtime(
        home,
        database_url=args.database_url,
        organization=args.organization,
        ca_backend=args.ca,
        **kwargs,
    )


def _notifier(args: argparse.Namespace) -> Any:
    from provisioning.notify import MqttTarget, Notifier

    mqtt = None
    if getattr(args, "mqtt_host", None):
        mqtt = MqttTarget(
            args.mqtt_host,
            args.mqtt_port,
            args.mqtt_topic_prefix,
            args.mqtt_ca,
            args.mqtt_cert,
            args.mqtt_key,
        )
    if not getattr(args, "webhook", None) and mqtt is None:
        return None
    return Notifier(webhook_url=args.webhook, mqtt=mqtt)


def cmd_init(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        print(f"ca: {rt.ca.paths.root}")
        print(f"registry: {rt.registry.dialect}")
        print(f"ca-fingerprint: {rt.ca.root_fingerprint}")
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    with _runtime(args, create_ca=False) as rt:
        print(rt.ca.root_fingerprint)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from idmz.provisioning_serve import serve

    return serve(args, open_runtime=_runtime, notifier=_notifier)


def cmd_device_add(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        rt.services.operators.add_device(
            args.path,
            operator=operator_actor(),
            now=utc_now(),
            device_class=args.device_class,
            asset=args.asset,
        )
        print(f"registered {args.path}")
    return 0


def cmd_device_list(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        devices = rt.registry.devices()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "path": d.path,
                            "status": d.status,
                            "class": d.device_class,
                            "asset": d.asset,
                        }
                        for d in devices
                    ],
                    indent=2,
                )
            )
        else:
            for d in devices:
                print(f"{d.status:<10} {d.device_class:<10} {d.path}  {d.asset}")
    return 0


def cmd_group_add(args: argparse.Namespace) -> int:
    with _runtime(args) as rt:
        rt.services.operators.add_group(
            args.prefix,
            operator=operator_actor(),
            now=utc_now(),
            device_class=args.device_class,
            validity_days=args.validity_days,
            renewal_grace_days=args.grace_days,
        )
        print(
            f"group {args.prefix}: validity {args.validity_days or 'policy default'} days, "
            f"renewal grace {args.grace_days} days"
        )
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from idmz.operator import operator_name
    from provisioning.config import parse_duration
    from provisioning.tokens import Role

    ttl_s = int(parse_duration(args.ttl).total_seconds()) if args.ttl else None
    with _runtime(args) as rt:
        if args.role:
            name = args.name or operator_name()
            token, claims = rt.services.operators.create_operator_token(
                operator=operator_actor(),
                name=name,
                role=Role(args.role),
                now=utc_now(),
                ttl_s=ttl_s,
            )
            print(
                f"{args.role} token for {name} (id {claims.token_id}, revoke with `idmz "
                f"provisioning token revoke --id {claims.token_id}`), "
                f"expires {claims.expires_at:%Y-%m-%dT%H:%M:%SZ}"
            )
        else:
            token, claims = rt.services.operators.create_enrollment_token(
                operator=operator_actor(),
                now=utc_now(),
                device=args.device,
                group=args.group,
                ttl_s=ttl_s,
            )
            print(
                f"one-time enrollment token for {args.device or 'group ' + args.group}, "
                f"expires {claims.expires_at:%Y-%m-%dT%H:%M:%SZ}"
            )
            print(f"ca-fingerprint: {rt.ca.root_fingerprint}")
            if args.est_password:
                token = rt.token_key.est_password(claims.token_id)
        print(token)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    token = read_token(args.token_file) if args.token_file is not None else None
    with _runtime(args) as rt:
        jti = rt.services.operator_tokens.revoke_operator_token(
            operator=operator_actor(), now=utc_now(), token_id=args.id, token=token
        )
        print(f"operator token {jti} is revoked; every instance refuses it from now on")
    return 0


def read_token(path: Path | None, *, env_var: str | None = None) -> str:
    """A bearer token from a file, from standard input (``-``), else from ``env_var``: never
    from the command line, where every user of the host sees it (review S10). Bounded."""
    from provisioning.errors import UsageError
    from provisioning.tokens import MAX_TOKEN_CHARS

    if path is not None:
        try:
            raw = (
                sys.stdin.read(MAX_TOKEN_CHARS + 1)
                if str(path) == "-"
                else path.open(encoding="utf-8").read(MAX_TOKEN_CHARS + 1)
            )
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the token from {path}: {exc}") from exc
        source = "standard input" if str(path) == "-" else str(path)
    else:
        import os

        raw = os.environ.get(env_var, "") if env_var else ""
        source = f"${env_var}"
    token = raw.strip()
    if not token:
        wanted = f"--token-file FILE, --token-file - (stdin) or ${env_var}" if env_var else "FILE"
        raise UsageError(f"no token in {source}; give it with {wanted}")
    if len(token) > MAX_TOKEN_CHARS:
        raise UsageError(f"the token in {source} is longer than any token this service mints")
    return token


def cmd_revoke(args: argparse.Namespace) -> int:
    from pki.authority import RevocationReason

    notifier = _notifier(args)
    with _runtime(args, listeners=(notifier.revoked,) if notifier else ()) as rt:
        notice = rt.services.operators.revoke_device(
            args.path,
            operator=operator_actor(),
            now=utc_now(),
            reason=RevocationReason(args.reason),
        )
        print(
            f"revoked {notice.device}: {len(notice.serials)} certificate(s) "
            f"{', '.join(notice.serials)}; CRL #{notice.crl_number} published to {rt.ca.paths.crl_pem}"
        )
    return 0


def cmd_sign_request(args: argparse.Namespace) -> int:
    from pki.csr import check_csr
    from provisioning.client import offline_response, parse_offline_request

    if args.token_on_command_line is not None:
        from provisioning.errors import UsageError

        raise UsageError(
            "--token is not accepted: a token on the command line shows in the process list; "
            f"use --token-file FILE, --token-file - (stdin) or ${ENROLLMENT_VAR}"
        )
    token = read_token(args.token_file, env_var=ENROLLMENT_VAR)
    identity, csr = parse_offline_request(args.request.read_bytes())
    with _runtime(args) as rt:
        result = rt.services.enrollment.enroll(
            token,
            check_csr(csr, rt.services.enrollment.key_policy),
            now=utc_now(),
            client="offline",
            via="offline",
            requested_identity=identity,
        )
        issued = result.issued
        args.out.write_bytes(
            offline_response(
                result.identity.path, issued.leaf_pem(), issued.chain_pem(), issued.root_pem()
            )
        )
        print(
            f"signed {result.identity} serial {issued.serial_hex} valid until {issued.not_after:%Y-%m-%d}; "
            f"response in {args.out}"
        )
    return 0


def cmd_expiry(args: argparse.Namespace) -> int:
    from provisioning.expiry import alert_expiring, scan_expiry
    from provisioning.retirement import withdraw_stale_pending

    notifier = _notifier(args)
    with _runtime(args) as rt:
        days = (
            tuple(int(d) for d in args.days.split(","))
            if args.days
            else rt.services.enrollment.policy.expiry_alert_days
        )
        report = scan_expiry(
            rt.registry,
            now=utc_now(),
            alert_days=days,
            issuing_not_after=rt.services.enrollment.issuing.not_valid_after_utc,
            device_validity=rt.services.enrollment.max_device_validity,
        )
        alert_expiring(
            report,
            registry=rt.registry,
            audit=rt.audit,
            actor=operator_actor(),
            notifiers=(notifier,) if notifier else (),
        )
        withdrawn = withdraw_stale_pending(
            rt.ca, rt.registry, rt.audit, now=utc_now(), actor=operator_actor()
        )
        if withdrawn:
            print(
                f"revoked {len(withdrawn)} certificate(s) issued but never activated: "
                f"{', '.join(withdrawn)}",
                file=sys.stderr,
            )
        retired = rt.services.enrollment.revoke_superseded(now=utc_now(), actor=operator_actor())
        if retired:
            print(
                f"revoked {len(retired)} superseded certificate(s) past the switch-over grace: "
                f"{', '.join(retired)}",
                file=sys.stderr,
            )
        if args.json:
            print(json.dumps(report.as_json(), indent=2))
        else:
            for line, certs in sorted(report.by_line.items()):
                print(f"{line}:")
                for c in certs:
                    print(
                        f"  {c.device}  serial {c.serial}  expires {c.not_after:%Y-%m-%d}  "
                        f"({c.days_left:.1f} days, <= {c.threshold_days})"
                    )
            if not report.items:
                print(f"no certificates expire within {max(days)} days")
            if report.ca_warning:
                print(f"WARNING: {report.ca_warning}")
    return 0
