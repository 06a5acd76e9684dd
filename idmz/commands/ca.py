"""`idmz ca`: the certificate authority from the command line.

    idmz ca init --organization acme           root + issuing CA under <home>/ca
    idmz ca issue --csr dev.csr --identity acme/plant1/press/line1/cell2/press-07 \\
        --profile device --out cert.pem --chain-out chain.pem
    idmz ca revoke 3f2a... --reason key-compromise
    idmz ca fingerprint                         the root SHA-256 that gateways pin

The CA passphrase comes from ``IDMZ_CA_PASSPHRASE_FILE`` (a 0600 file), else
``IDMZ_CA_PASSPHRASE``, else ``<home>/ca/passphrase`` (generated 0600 by ``ca init`` when none
is set). Issuance, revocation and CRL publication are recorded in the audit log under
``<home>/audit``. ``--backend vault`` sends issue/revoke/crl to Vault's PKI engine
(``VAULT_*`` variables or ``<home>/ca/vault.toml``; see docs/pki.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from audit.events import Outcome
from bedrock.clock import utc_now
from idmz import events
from idmz.commands import ca_ceremony as ceremony
from idmz.commands import ca_context as ctx

PROFILES = ("device", "server", "consumer", "model-signer")
REASONS = (
    "unspecified",
    "key-compromise",
    "ca-compromise",
    "affiliation-changed",
    "superseded",
    "cessation-of-operation",
    "certificate-hold",
    "privilege-withdrawn",
)


# -- commands -----------------------------------------------------------------------------


def _cmd_issue(args: argparse.Namespace) -> int:
    from pki.authority import format_serial
    from pki.csr import verify_csr
    from pki.errors import PKIError
    from pki.keys import KeyPolicy
    from pki.profiles import ProfileName, parse_subject

    home = ctx.home_of(args)
    profile = ProfileName(args.profile)
    subject = parse_subject(profile, args.identity)
    csr = ctx.read_input(args.csr)
    validity = timedelta(days=args.days) if args.days is not None else None
    with ctx.authority(args) as ca:
        try:
            verified = verify_csr(
                csr, KeyPolicy(), subject=subject
            )  # the CA's key policy: in the plan
            issued = ca.issue(verified, subject, profile=profile, now=utc_now(), validity=validity)
        except PKIError as exc:
            events.audit(
                home,
                "pki.cert.issued",
                subject.path,
                Outcome.DENIED,
                str(exc),
                profile=profile.value,
            )
            raise
    events.audit(
        home,
        "pki.cert.issued",
        issued.serial_hex,
        Outcome.SUCCESS,
        identity=subject.path,
        profile=profile.value,
        fingerprint=issued.fingerprint,
        not_after=issued.not_after.isoformat(),
        backend=args.backend,
    )
    ctx.write_public(Path(args.out), issued.leaf_pem())
    if args.chain_out:
        ctx.write_public(Path(args.chain_out), issued.chain_pem())
    print(
        f"issued {profile} certificate {format_serial(issued.serial)} for {subject.path}, "
        f"valid until {issued.not_after:%Y-%m-%d %H:%M}Z; wrote {args.out}"
    )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from pki.authority import RevocationReason, format_serial, parse_serial

    home = ctx.home_of(args)
    try:
        serial = parse_serial(args.serial)
    except ValueError as exc:
        raise ctx.CAUsageError(str(exc)) from exc
    reason = RevocationReason(args.reason)
    from pki.errors import PKIError
    from pki.local import LocalCA

    with ctx.authority(args) as ca:
        # The subject for the audit record (the lifecycle report); Vault keeps its own.
        entry = ca.lookup(serial) if isinstance(ca, LocalCA) else None
        try:
            record = ca.revoke(serial, reason, now=utc_now())
        except PKIError as exc:
            events.audit(home, "pki.cert.revoked", format_serial(serial), Outcome.DENIED, str(exc))
            raise
    if record.already_revoked:
        print(
            f"{format_serial(serial)} was already revoked at {record.revoked_at:%Y-%m-%d %H:%M}Z "
            f"({record.reason}); the first revocation stands"
        )
        return 0
    events.audit(
        home,
        "pki.cert.revoked",
        format_serial(serial),
        Outcome.SUCCESS,
        reason.value,
        backend=args.backend,
        identity=entry.subject if entry else None,
        profile=entry.profile if entry else None,
        not_after=entry.not_after.isoformat() if entry else None,
    )
    print(f"revoked {format_serial(serial)} ({reason}); CRL regenerated")
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    """Publish once; with ``--watch`` check every ``--interval`` seconds and republish when less
    than half the CRL's lifetime is left (ADR 0016; deploy/systemd/idmz-crl.service)."""
    home = ctx.home_of(args)
    out_dir = Path(args.out_dir) if args.out_dir else None
    from idmz.crl_publisher import crl_published_event, republish_crl
    from idmz.operator import operator_actor
    from pki.local import LocalCA

    with ctx.authority(args) as ca:
        force = True  # the first round publishes: the operator asked for a CRL
        while True:
            bundle = republish_crl(ca, now=utc_now(), force=force)
            if bundle is not None:
                if out_dir is not None:
                    out_dir.mkdir(parents=True, exist_ok=True)
                    ctx.write_public(out_dir / "crl.pem", bundle.pem)
                    ctx.write_public(out_dir / "crl.der", bundle.der)
                event = crl_published_event(bundle, actor=operator_actor())
                events.record(home, [event])
                print(
                    f"published CRL #{event.details['crl_number']} with {len(bundle.crl)} "
                    f"entries, next update {bundle.next_update:%Y-%m-%d %H:%M}Z",
                    flush=True,
                )
            if not args.watch:
                return 0
            time.sleep(args.interval)
            # A Vault mount rebuilds its own CRL: keep reading, checking and copying it.
            force = not isinstance(ca, LocalCA)


def _resolving_backend(func: Any) -> Any:
    """Run ``func`` with ``args.backend`` resolved against the home (ADR 0019: one per home)."""

    def run(args: argparse.Namespace) -> int:
        from idmz.vault_settings import resolve_ca_backend

        args.backend = resolve_ca_backend(ctx.home_of(args), args.backend)
        result: int = func(args)
        return result

    return run


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    if args.backend == "vault":
        from pki.authority import fingerprint_sha256

        with ctx.authority(args) as ca:
            print(fingerprint_sha256(ca.ca_chain()[-1]))
        return 0
    from pki.publication import CAPublication

    print(ctx.fingerprint_file(CAPublication(ctx.home_of(args).ca_dir).root_cert))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pki.health import ca_health
    from pki.local import LocalCA

    now = utc_now()
    counts = None
    with ctx.authority(args) as ca:
        crl = ca.current_crl(now=now)
        if isinstance(ca, LocalCA):
            counts = ca.ledger.counts(now)
        health = ca_health(ca.ca_chain(), now=now, crl=crl)
    report: dict[str, Any] = {
        "backend": args.backend,
        "root": _cert_report(health.root),
        "issuing": _cert_report(health.issuing),
        "device_issuance_until": health.device_issuance_until.isoformat(),
        "crl": {
            "number": health.crl_number,
            "entries": health.crl_entries,
            "next_update": health.crl_next_update.isoformat() if health.crl_next_update else None,
        },
        "warnings": list(health.warnings),
    }
    if counts is not None:
        report["certificates"] = {
            "issued": counts.issued,
            "revoked": counts.revoked,
            "active": counts.active,
        }
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"backend   {args.backend}")
    for role in ("root", "issuing"):
        info = report[role]
        print(f"{role:<9} {info['subject']}, until {info['not_after']} ({info['days_left']} days)")
    print(f"pin       sha256 {health.root.fingerprint}")
    if counts is not None:
        print(f"issued    {counts.issued} (active {counts.active}, revoked {counts.revoked})")
    print(
        f"crl       #{health.crl_number}, {health.crl_entries} entries, next update {health.crl_next_update}"
    )
    for warning in health.warnings:
        print(f"warning   {warning}")
    return 0


def _cert_report(cert: Any) -> dict[str, Any]:
    return {
        "subject": cert.subject,
        "not_after": cert.not_after.isoformat(),
        "days_left": cert.days_left,
        "fingerprint": cert.fingerprint,
    }


def _cmd_list(args: argparse.Namespace) -> int:
    now = utc_now()
    with ctx.local(ctx.home_of(args)) as ca:
        entries = ca.ledger.entries(subject=args.identity, revoked_only=args.revoked)
    if args.expiring is not None:
        horizon = now + timedelta(days=args.expiring)
        entries = [e for e in entries if e.status(now) == "valid" and e.not_after <= horizon]
    rows = [entry.as_dict(now) for entry in entries]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["serial"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        for r in rows:
            print(
                f"{r['serial']}  {r['status']:<8} {r['profile']:<12} "
                f"{(r['not_after'] or '')[:10]}  {r['subject']}"
            )
        print(f"{len(rows)} certificate(s)", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `ca` command group to the top-level parser."""
    ca = sub.add_parser("ca", help=summary, description=__doc__.splitlines()[0] if __doc__ else "")
    cmds = ca.add_subparsers(dest="ca_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, func: Any, text: str, *, backend: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=text, description=text)
        p.set_defaults(func=func)
        if backend:
            p.add_argument(
                "--backend",
                choices=("local", "vault"),
                default=None,
                help="default: the backend the home already uses (<home>/ca/backend), else local",
            )
            p.set_defaults(func=_resolving_backend(func))
        return p

    ceremony.add_commands(add)

    p = add(
        "issue", _cmd_issue, "issue a certificate from a CSR; the CA writes the names", backend=True
    )
    p.add_argument("--csr", required=True, help="PEM or DER PKCS#10 request, or - for stdin")
    p.add_argument(
        "--identity",
        required=True,
        help="identity path (device/consumer/signer) or server names a,b,ip",
    )
    p.add_argument("--profile", choices=PROFILES, default="device")
    p.add_argument("--days", type=ctx.days, help="validity (default: the profile's)")
    p.add_argument("--out", required=True, help="where to write the certificate (PEM)")
    p.add_argument("--chain-out", help="where to write the issuing chain (PEM, root excluded)")

    p = add(
        "revoke", _cmd_revoke, "revoke a certificate by serial; regenerates the CRL", backend=True
    )
    p.add_argument("serial", help="hex serial (colons allowed)")
    p.add_argument("--reason", choices=REASONS, default="unspecified")

    p = add("crl", _cmd_crl, "publish a signed CRL (PEM and DER) with nextUpdate", backend=True)
    p.add_argument("--out-dir", help="also copy crl.pem and crl.der here")
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep running: every --interval, republish once less than half the lifetime is left",
    )
    p.add_argument(
        "--interval", type=ctx.positive, default=600.0, help="check every N seconds (default 600)"
    )

    p = add(
        "fingerprint", _cmd_fingerprint, "print the root's SHA-256 fingerprint (hex)", backend=True
    )

    p = add("status", _cmd_status, "CA expiry, counts, CRL state", backend=True)
    p.add_argument("--json", action="store_true")

    p = add("list", _cmd_list, "issued certificates from the ledger (local backend)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true")
    form.add_argument("--csv", action="store_true", help="one row per certificate, for auditors")
    p.add_argument(
        "--expiring", type=ctx.days, metavar="DAYS", help="only valid ones expiring within DAYS"
    )
    p.add_argument("--identity", help="only this identity path")
    p.add_argument("--revoked", action="store_true", help="only revoked certificates")
