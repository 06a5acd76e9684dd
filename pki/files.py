"""Where a local CA keeps its files (docs/contracts.md section 5). They are written with
`bedrock.files.write_atomic` (ADR 0015, ADR 0007)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from pki.errors import ConfigError


@dataclass(frozen=True, slots=True)
class CAPaths:
    """The files of a local CA directory."""

    root: Path

    @property
    def root_cert(self) -> Path:
        return self.root / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.root / "root.key.pem"

    @property
    def issuing_cert(self) -> Path:
        return self.root / "issuing.pem"

    @property
    def issuing_key(self) -> Path:
        return self.root / "issuing.key.pem"

    @property
    def chain(self) -> Path:
        return self.root / "chain.pem"

    @property
    def crl_pem(self) -> Path:
        return self.root / "crl.pem"

    @property
    def crl_der(self) -> Path:
        return self.root / "crl.der"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def intermediate_request(self) -> Path:
        return self.root / "issuing.csr.pem"


def require_aware(now: datetime) -> datetime:
    """Every time the CA compares must carry a zone: a naive ``now`` is a caller bug that would
    otherwise surface as a TypeError deep inside a comparison."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConfigError(
            "the CA needs timezone-aware times (datetime.now(UTC)); found a naive time"
        )
    return now


def load_ca_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"CA certificate {path} is missing; run `idmz ca init` first") from exc
    except ValueError as exc:
        raise ConfigError(f"CA certificate {path} is not a PEM certificate") from exc


def require_owner_only(path: Path) -> None:
    """A CA key file must not be readable by group or others, even though it is encrypted: its
    exposure turns a passphrase leak into a CA compromise, and drifted modes hint at tampering."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError as exc:
        raise ConfigError(f"CA key {path} is missing") from exc
    if mode & 0o077:
        raise ConfigError(
            f"CA key {path} must be readable by its owner only (0600); found {mode:04o}"
        )
