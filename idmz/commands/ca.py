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
import json
import os
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idmz.home import Home, generate_secret_file, load_secret, read_secret_file, resolve_home

if TYPE_CHECKING:
    from audit.events import AuditEvent
    from pki.authority import CertificateAuthority
    from pki.local import LocalCA

PASSPHRASE_VAR = "IDMZ_CA_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
PASSPHRASE_FILE = "passphrase"  # noqa: S105 - a file name
VAULT_TOML = "vault.toml"
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
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


class CAUsageError(Exception):
    """The command line asked for something impossible (exit code 2)."""


# -- settings -----------------------------------------------------------------------------


def _home(args: argparse.Namespace) -> Home:
    return resolve_home(args.home)


def _passphrase(home: Home, *, create: bool) -> bytes:
    default = home.ca_dir / PASSPHRASE_FILE
    value = load_secret(PASSPHRASE_VAR, default_file=default)
    if value is not None:
        return value
    if not create:
        raise CAUsageError(
            f"no CA passphrase: set {PASSPHRASE_VAR}_FILE (a 0600 file) or {PASSPHRASE_VAR}, "
            f"or keep the generated {default}"
        )
    value = generate_secret_file(default)
    print(
        f"idmz: generated a random CA passphrase into {default} (mode 0600); back it up "
        f"separately from the CA keys, or set {PASSPHRASE_VAR}_FILE next time",
        file=sys.stderr,
    )
    return value


def _vault_settings(home: Home) -> dict[str, Any]:
    """Vault settings: ``<home>/ca/vault.toml`` overridden by ``VAULT_*`` variables."""
    settings: dict[str, Any] = {}
    toml_path = home.ca_dir / VAULT_TOML
    if toml_path.exists():
        with toml_path.open("rb") as fh:
            settings.update(tomllib.load(fh))
    env: Mapping[str, str] = os.environ
    for key, var in (
        ("url", "VAULT_ADDR"),
        ("mount", "VAULT_PKI_MOUNT"),
        ("role", "VAULT_PKI_ROLE"),
        ("role_id", "VAULT_ROLE_ID"),
        ("namespace", "VAULT_NAMESPACE"),
        ("ca_bundle", "VAULT_CACERT"),
    ):
        if env.get(var):
            settings[key] = env[var]
    secret = load_secret("VAULT_SECRET_ID")
    if secret is not None:
        settings["secret_id"] = secret.decode()
    elif "secret_id_file" in settings:
        settings["secret_id"] = read_secret_file(Path(settings.pop("secret_id_file"))).decode()
    return settings


@contextmanager
def _authority(args: argparse.Namespace) -> Iterator[CertificateAuthority]:
    home = _home(args)
    if getattr(args, "backend", "local") == "vault":
        from pki.vault import VaultCA, VaultConfig

        vault = VaultCA.connect(VaultConfig.from_mapping(_vault_settings(home)))
        try:
            yield vault
        finally:
            vault.close()
        return
    with _local(home) as ca:
        yield ca


@contextmanager
def _local(home: Home) -> Iterator[LocalCA]:
    from pki.local import LocalCA

    ca = LocalCA.open(home.ca_dir, passphrase=_passphrase(home, create=False))
    try:
        yield ca
    finally:
        ca.close()


def _now() -> datetime:
    return datetime.now(UTC)


# -- audit --------------------------------------------------------------------------------


def _record(home: Home, events: list[AuditEvent]) -> None:
    """Append ``events`` to the audit log under ``<home>/audit`` (durable before we return)."""
    try:
        from audit.log import AuditLog
    except ImportError:  # the audit package's log has not landed in this build
        print("idmz: warning: audit log unavailable; CA action not recorded", file=sys.stderr)
        return
    origin = os.environ.get("IDMZ_AUDIT_ORIGIN") or _audit_origin(home)
    with AuditLog.open(home.audit_dir, origin=origin, background_checkpoints=False) as log:
        for event in events:
            log.record(event)


def _audit_origin(home: Home) -> str:
    """Reuse the origin the log was created with (first line of its verifier key)."""
    vkey = home.audit_dir / "checkpoint.vkey"
    if vkey.exists():
        name = vkey.read_text().split("+", 1)[0].strip()
        if name:
            return name
    return "idmz/audit"


def _event(action: str, resource: str, outcome: str, reason: str = "", **details: Any) -> Any:
    from audit.events import AuditEvent, Outcome

    actor = os.environ.get("USER") or "operator"
    return AuditEvent(
        actor=f"operator:{actor}",
        action=action,
        resource=resource,
        outcome=Outcome(outcome),
        reason=reason,
        zone="idmz",
        details={k: v for k, v in details.items() if v is not None},
    )


def _audit(
    home: Home, action: str, resource: str, outcome: str, reason: str = "", **d: Any
) -> None:
    try:
        event = _event(action, resource, outcome, reason, **d)
    except ImportError:
        print("idmz: warning: audit log unavailable; CA action not recorded", file=sys.stderr)
        return
    _record(home, [event])


# -- commands -----------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from pki.local import init_local_ca

    home = _home(args).ensure()
    passphrase = _passphrase(home, create=True)
    paths = init_local_ca(
        home.ca_dir,
        passphrase=passphrase,
        organization=args.organization,
        now=_now(),
        key_type=args.key_type,
        root_validity=timedelta(days=args.root_days),
        issuing_validity=timedelta(days=args.issuing_days),
        root_only=args.root_only,
    )
    print(f"created root CA {paths.root_cert}")
    if args.root_only:
        print(
            "root only: sign an issuing CA with `idmz ca sign-intermediate --csr FILE --out FILE`"
        )
    else:
        print(f"created issuing CA {paths.issuing_cert}; chain {paths.chain}; CRL {paths.crl_pem}")
    print(f"root fingerprint (sha256) {_fingerprint_file(paths.root_cert)}")
    return 0


def _cmd_intermediate_request(args: argparse.Namespace) -> int:
    from pki.local import create_intermediate_request

    home = _home(args).ensure()
    data = create_intermediate_request(
        home.ca_dir,
        passphrase=_passphrase(home, create=True),
        organization=args.organization,
        key_type=args.key_type,
    )
    if args.out:
        Path(args.out).write_bytes(data)
    print(f"wrote issuing CA request {args.out or home.ca_dir / 'issuing.csr.pem'}")
    print("carry it to the offline root host: idmz ca sign-intermediate --csr FILE --out FILE")
    return 0


def _cmd_sign_intermediate(args: argparse.Namespace) -> int:
    from pki.local import sign_intermediate

    home = _home(args)
    cert = sign_intermediate(
        home.ca_dir,
        passphrase=_passphrase(home, create=False),
        unverified_csr=_read_input(args.csr),
        now=_now(),
        validity=timedelta(days=args.days),
    )
    Path(args.out).write_bytes(cert)
    print(f"wrote issuing CA certificate {args.out}")
    print(f"carry it and {home.ca_dir / 'root.pem'} back: idmz ca install-intermediate")
    return 0


def _cmd_install_intermediate(args: argparse.Namespace) -> int:
    from pki.local import install_intermediate

    home = _home(args)
    install_intermediate(
        home.ca_dir,
        passphrase=_passphrase(home, create=False),
        cert_pem=_read_input(args.cert),
        root_pem=_read_input(args.root),
        now=_now(),
    )
    print(f"installed issuing CA in {home.ca_dir}")
    print(f"root fingerprint (sha256) {_fingerprint_file(home.ca_dir / 'root.pem')}")
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    from pki.authority import format_serial
    from pki.errors import PKIError
    from pki.profiles import ProfileName, parse_subject

    home = _home(args)
    profile = ProfileName(args.profile)
    subject = parse_subject(profile, args.identity)
    csr = _read_input(args.csr)
    validity = timedelta(days=args.days) if args.days is not None else None
    with _authority(args) as ca:
        try:
            issued = ca.issue(csr, subject, profile=profile, now=_now(), validity=validity)
        except PKIError as exc:
            _audit(home, "pki.cert.issued", subject.path, "denied", str(exc), profile=profile.value)
            raise
    _audit(
        home,
        "pki.cert.issued",
        issued.serial_hex,
        "success",
        identity=subject.path,
        profile=profile.value,
        fingerprint=issued.fingerprint,
        not_after=issued.not_after.isoformat(),
        backend=args.backend,
    )
    _write_public(Path(args.out), issued.leaf_pem())
    if args.chain_out:
        _write_public(Path(args.chain_out), issued.chain_pem())
    print(
        f"issued {profile} certificate {format_serial(issued.serial)} for {subject.path}, "
        f"valid until {issued.not_after:%Y-%m-%d %H:%M}Z; wrote {args.out}"
    )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    from pki.authority import RevocationReason, format_serial, parse_serial

    home = _home(args)
    try:
        serial = parse_serial(args.serial)
    except ValueError as exc:
        raise CAUsageError(str(exc)) from exc
    reason = RevocationReason(args.reason)
    with _authority(args) as ca:
        record = ca.revoke(serial, reason, now=_now())
    if record.already_revoked:
        print(
            f"{format_serial(serial)} was already revoked at {record.revoked_at:%Y-%m-%d %H:%M}Z "
            f"({record.reason}); the first revocation stands"
        )
        return 0
    _audit(home, "pki.cert.revoked", format_serial(serial), "success", reason.value)
    print(f"revoked {format_serial(serial)} ({reason}); CRL regenerated")
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    home = _home(args)
    out_dir = Path(args.out_dir) if args.out_dir else None
    from pki.local import LocalCA

    with _authority(args) as ca:
        while True:
            now = _now()
            bundle = ca.publish_crl(now=now) if isinstance(ca, LocalCA) else ca.current_crl(now=now)
            number = _crl_number(bundle.crl)
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                _write_public(out_dir / "crl.pem", bundle.pem)
                _write_public(out_dir / "crl.der", bundle.der)
            _audit(
                home,
                "pki.crl.published",
                f"crl/{number}",
                "success",
                entries=len(bundle.crl),
                next_update=bundle.next_update.isoformat(),
            )
            print(
                f"published CRL #{number} with {len(bundle.crl)} entries, next update "
                f"{bundle.next_update:%Y-%m-%d %H:%M}Z",
                flush=True,
            )
            if not args.watch:
                return 0
            time.sleep(args.interval)


def _cmd_fingerprint(args: argparse.Namespace) -> int:
    if args.backend == "vault":
        from pki.authority import fingerprint_sha256

        with _authority(args) as ca:
            print(fingerprint_sha256(ca.ca_chain()[-1]))
        return 0
    print(_fingerprint_file(_home(args).ca_dir / "root.pem"))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pki.authority import fingerprint_sha256
    from pki.profiles import PROFILES as SPECS
    from pki.profiles import ProfileName

    home = _home(args)
    now = _now()
    with _authority(args) as ca:
        issuing, root = ca.ca_chain()[0], ca.ca_chain()[-1]
        report: dict[str, Any] = {
            "backend": args.backend,
            "root": _cert_info(root, now) | {"fingerprint": fingerprint_sha256(root)},
            "issuing": _cert_info(issuing, now),
        }
        from pki.local import LocalCA

        if isinstance(ca, LocalCA):
            counts = ca.ledger.counts(now)
            report["certificates"] = {
                "issued": counts.issued,
                "revoked": counts.revoked,
                "active": counts.active,
            }
            crl = ca.current_crl(now=now)
            report["crl"] = {
                "number": _crl_number(crl.crl),
                "entries": len(crl.crl),
                "next_update": crl.next_update.isoformat(),
                "path": str(home.ca_dir / "crl.pem"),
            }
    # Vault's cliff (#13193): issuance fails once the issuing CA expires sooner than a
    # certificate's validity. Say when that begins, before it does.
    device_days = SPECS[ProfileName.DEVICE].default_validity
    cliff = issuing.not_valid_after_utc - device_days
    warnings = []
    if cliff - now < timedelta(days=30):
        warnings.append(
            f"the issuing CA expires {issuing.not_valid_after_utc:%Y-%m-%d}: {device_days.days}-day "
            f"device certificates cannot be issued after {cliff:%Y-%m-%d}; renew the issuing CA"
        )
    report["device_issuance_until"] = cliff.isoformat()
    report["warnings"] = warnings
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"backend   {report['backend']}")
    for role in ("root", "issuing"):
        info = report[role]
        print(
            f"{role:<9} {info['subject']}  valid until {info['not_after']} ({info['days_left']} days)"
        )
    print(f"pin       sha256 {report['root']['fingerprint']}")
    if "certificates" in report:
        c = report["certificates"]
        print(f"issued    {c['issued']} (active {c['active']}, revoked {c['revoked']})")
        print(
            f"crl       #{report['crl']['number']}, {report['crl']['entries']} entries, next update {report['crl']['next_update']}"
        )
    for warning in warnings:
        print(f"warning   {warning}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from pki.authority import format_serial

    home = _home(args)
    now = _now()
    with _local(home) as ca:
        entries = ca.ledger.entries(subject=args.identity, revoked_only=args.revoked)
    rows: list[dict[str, Any]] = [
        {
            "serial": format_serial(e.serial),
            "subject": e.subject,
            "profile": e.profile,
            "fingerprint": e.fingerprint,
            "issued_at": e.issued_at.isoformat(),
            "not_after": e.not_after.isoformat(),
            "status": "revoked" if e.revoked_at else ("expired" if e.not_after <= now else "valid"),
            "revoked_at": e.revoked_at.isoformat() if e.revoked_at else None,
            "reason": e.reason.value if e.reason else None,
        }
        for e in entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(
            f"{r['serial']}  {r['status']:<8} {r['profile']:<12} {r['not_after'][:10]}  {r['subject']}"
        )
    print(f"{len(rows)} certificate(s)", file=sys.stderr)
    return 0


# -- helpers ------------------------------------------------------------------------------


def _read_input(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CAUsageError(f"cannot read {path}: {exc.strerror}") from exc


def _write_public(path: Path, data: bytes) -> None:
    """Certificates and CRLs are public: 0644, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _fingerprint_file(path: Path) -> str:
    from pki.authority import fingerprint_sha256
    from pki.files import load_ca_certificate

    return fingerprint_sha256(load_ca_certificate(path))


def _cert_info(cert: Any, now: datetime) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "days_left": (cert.not_valid_after_utc - now).days,
    }


def _crl_number(crl: Any) -> int:
    from cryptography import x509

    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive; found {text}")
    return value


def _days(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"days must be positive; found {text}")
    return value


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `ca` command group to the top-level parser."""
    ca = sub.add_parser("ca", help=summary, description=__doc__.splitlines()[0] if __doc__ else "")
    cmds = ca.add_subparsers(dest="ca_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, func: Any, text: str, *, backend: bool = False) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=text, description=text)
        p.set_defaults(func=func)
        if backend:
            p.add_argument("--backend", choices=("local", "vault"), default="local")
        return p

    p = add("init", _cmd_init, "create a root CA and an issuing CA under <home>/ca")
    p.add_argument("--organization", default="idmz", help="O= in the CA names (default: idmz)")
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    p.add_argument("--root-only", action="store_true", help="create only the root (offline root)")
    p.add_argument("--root-days", type=_days, default=3650)
    p.add_argument("--issuing-days", type=_days, default=1825)

    p = add(
        "intermediate-request",
        _cmd_intermediate_request,
        "make an issuing CA key and CSR for an offline root",
    )
    p.add_argument("--organization", default="idmz")
    p.add_argument("--key-type", choices=KEY_TYPES, default="ec-p256")
    p.add_argument("--out", help="also write the CSR here")

    p = add(
        "sign-intermediate", _cmd_sign_intermediate, "on the root host: sign an issuing CA request"
    )
    p.add_argument("--csr", required=True, help="the issuing CA's CSR (PEM), or - for stdin")
    p.add_argument("--out", required=True, help="where to write the issuing CA certificate")
    p.add_argument("--days", type=_days, default=1825)

    p = add(
        "install-intermediate",
        _cmd_install_intermediate,
        "install the signed issuing CA and the root",
    )
    p.add_argument("--cert", required=True, help="the signed issuing CA certificate (PEM)")
    p.add_argument("--root", required=True, help="the root CA certificate (PEM)")

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
    p.add_argument("--days", type=_days, help="validity (default: the profile's)")
    p.add_argument("--out", required=True, help="where to write the certificate (PEM)")
    p.add_argument("--chain-out", help="where to write the issuing chain (PEM, root excluded)")

    p = add(
        "revoke", _cmd_revoke, "revoke a certificate by serial; regenerates the CRL", backend=True
    )
    p.add_argument("serial", help="hex serial (colons allowed)")
    p.add_argument("--reason", choices=REASONS, default="unspecified")

    p = add("crl", _cmd_crl, "publish a signed CRL (PEM and DER) with nextUpdate", backend=True)
    p.add_argument("--out-dir", help="also copy crl.pem and crl.der here")
    p.add_argument("--watch", action="store_true", help="keep regenerating every --interval")
    p.add_argument("--interval", type=_positive, default=3600.0, help="seconds (default 3600)")

    p = add(
        "fingerprint", _cmd_fingerprint, "print the root's SHA-256 fingerprint (hex)", backend=True
    )

    p = add("status", _cmd_status, "CA expiry, counts, CRL state", backend=True)
    p.add_argument("--json", action="store_true")

    p = add("list", _cmd_list, "issued certificates from the ledger (local backend)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--identity", help="only this identity path")
    p.add_argument("--revoked", action="store_true", help="only revoked certificates")
