"""Settings, state and side effects behind `idmz ca`: the passphrase, the Vault settings, the CA
backend, audit records and the files the commands write. Only `idmz` reads env and files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idmz.home import Home, generate_secret_file, load_secret, resolve_home

if TYPE_CHECKING:
    from audit.events import AuditEvent
    from pki.authority import CertificateAuthority
    from pki.local import LocalCA

PASSPHRASE_VAR = "IDMZ_CA_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
PASSPHRASE_FILE = "passphrase"  # noqa: S105 - a file name


class CAUsageError(Exception):
    """The command line asked for something impossible (exit code 2)."""


# -- settings -----------------------------------------------------------------------------


def home_of(args: argparse.Namespace) -> Home:
    return resolve_home(args.home)


def passphrase(home: Home, *, create: bool) -> bytes:
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


@contextmanager
def authority(args: argparse.Namespace) -> Iterator[CertificateAuthority]:
    home = home_of(args)
    if getattr(args, "backend", "local") == "vault":
        from idmz.vault_settings import connect_vault

        vault = connect_vault(home)
        try:
            yield vault
        finally:
            vault.close()
        return
    with local(home) as ca:
        yield ca


@contextmanager
def local(home: Home) -> Iterator[LocalCA]:
    from pki.local import LocalCA

    ca = LocalCA.open(home.ca_dir, passphrase=passphrase(home, create=False))
    try:
        yield ca
    finally:
        ca.close()


def now() -> datetime:
    return datetime.now(UTC)


# -- audit --------------------------------------------------------------------------------


def record(home: Home, events: list[AuditEvent]) -> None:
    """Append ``events`` to the audit log under ``<home>/audit``; returns once they are durable
    (an audit failure fails the command before any certificate file is written)."""
    from idmz.audit_log import open_audit_log

    with open_audit_log(home, background_checkpoints=False) as log:
        log.record_batch(events)


def make_event(
    action: str, resource: str, outcome: str, reason: str = "", **details: Any
) -> AuditEvent:
    from audit.events import AuditEvent, Outcome
    from idmz.operator import operator_actor

    return AuditEvent(
        actor=operator_actor(),
        action=action,
        resource=resource,
        outcome=Outcome(outcome),
        reason=reason,
        zone="idmz",
        details={k: v for k, v in details.items() if v is not None},
    )


def ca_created_event(root_cert: Path, *, organization: str, **details: Any) -> AuditEvent:
    """``pki.ca.created`` for a new CA under ``<home>/ca``: the root's serial as the resource,
    its SHA-256 fingerprint (the pin gateways use) and organization in details. Written by
    `idmz ca init` and by the provisioning service when it creates the CA itself."""
    from cryptography import x509

    from pki.authority import fingerprint_sha256, format_serial

    root = x509.load_pem_x509_certificate(root_cert.read_bytes())
    return make_event(
        "pki.ca.created",
        format_serial(root.serial_number),
        "success",
        fingerprint=fingerprint_sha256(root),
        organization=organization,
        subject=root.subject.rfc4514_string(),
        not_after=root.not_valid_after_utc.isoformat(),
        **details,
    )


def audit(
    home: Home, action: str, resource: str, outcome: str, reason: str = "", **details: Any
) -> None:
    record(home, [make_event(action, resource, outcome, reason, **details)])


# -- helpers ------------------------------------------------------------------------------


def read_input(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CAUsageError(f"cannot read {path}: {exc.strerror}") from exc


def write_public(path: Path, data: bytes) -> None:
    """Certificates and CRLs are public: 0644, replaced atomically."""
    from pki.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, 0o644)


def fingerprint_file(path: Path) -> str:
    from pki.authority import fingerprint_sha256
    from pki.files import load_ca_certificate

    return fingerprint_sha256(load_ca_certificate(path))


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive; found {text}")
    return value


def days(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"days must be positive; found {text}")
    return value
