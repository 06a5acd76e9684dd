"""The handlers of `idmz provisioning`: each subcommand opens the provisioning runtime (CA,
registry, audit) on the home, does one thing and prints what a script needs. The argument table
is `idmz.commands.provisioning`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bedrock.clock import utc_now
from idmz.operator import operator_actor

# The same variable `idmz enroll` reads: a token never needs to be on a command line (S10).
ENROLLMENT_VAR = "IDMZ_ENROLL_TOKEN"


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
