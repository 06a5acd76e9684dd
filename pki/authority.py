"""The interface every CA backend implements (local files, Vault), and what it returns.

Features call `CertificateAuthority` and never know which backend is behind it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.csr import VerifiedCSR
from pki.profiles import ProfileName, Subject


class RevocationReason(StrEnum):
    """RFC 5280 section 5.3.1 reason codes an operator may give."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key-compromise"
    CA_COMPROMISE = "ca-compromise"
    AFFILIATION_CHANGED = "affiliation-changed"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation-of-operation"
    CERTIFICATE_HOLD = "certificate-hold"
    PRIVILEGE_WITHDRAWN = "privilege-withdrawn"

    @property
    def x509_flag(self) -> x509.ReasonFlags:
        return x509.ReasonFlags[self.name.lower()]


@functools.lru_cache(maxsize=256)  # an issuance asks for its certificate's several times
def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the DER certificate (what gateways pin)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def format_serial(serial: int) -> str:
    """Serials are shown as lower-case hex, as openssl and Vault show them (without colons)."""
    return format(serial, "x")


# Plain hex, or hex byte pairs separated by ':' (Vault, openssl) or '-'.
_SERIAL = re.compile(
    r"[0-9a-f]{1,64}|[0-9a-f]{1,2}(?::[0-9a-f]{2})+|[0-9a-f]{1,2}(?:-[0-9a-f]{2})+"
)


def parse_serial(text: str) -> int:
    """Accept ``"1a2b..."``, ``"0x1a2b"`` or Vault's ``"1a:2b:..."`` forms."""
    stripped = text.strip().lower().removeprefix("0x")
    if not _SERIAL.fullmatch(stripped):
        raise ValueError(f"expected a hex serial number; found {text!r}")
    value = int(stripped.replace(":", "").replace("-", ""), 16)
    if value <= 0:
        raise ValueError(f"serial numbers are positive; found {text!r}")
    return value


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class CertificateFacts:
    """What every holder of one leaf certificate can say about it (serial, fingerprint, validity)."""

    __slots__ = ()
    certificate: x509.Certificate

    @property
    def serial(self) -> int:
        return self.certificate.serial_number

    @property
    def serial_hex(self) -> str:
        return format_serial(self.certificate.serial_number)

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.certificate)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    @property
    def not_before(self) -> datetime:
        return self.certificate.not_valid_before_utc


@dataclass(frozen=True, slots=True)
class IssuedCertificate(CertificateFacts):
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuing CA first, root last
    profile: ProfileName
    subject: Subject

    def leaf_pem(self) -> bytes:
        return pem(self.certificate)

    def chain_pem(self) -> bytes:
        """Intermediates only (issuing CA first), without the root."""
        return b"".join(_ca_pem(c) for c in self.chain[:-1])

    def root_pem(self) -> bytes:
        return _ca_pem(self.chain[-1])


@functools.lru_cache(maxsize=16)  # the same few CA certificates in every answer
def _ca_pem(cert: x509.Certificate) -> bytes:
    return pem(cert)


@dataclass(frozen=True, slots=True)
class RevocationRecord:
    serial: int
    reason: RevocationReason
    revoked_at: datetime
    already_revoked: bool = False


@dataclass(frozen=True, slots=True)
class CRLBundle:
    crl: x509.CertificateRevocationList
    pem: bytes
    der: bytes

    @property
    def next_update(self) -> datetime:
        value = self.crl.next_update_utc
        if value is None:  # we always set it; a CRL without one is not ours
            raise ValueError("CRL has no nextUpdate")
        return value


class CertificateAuthority(Protocol):
    """Issue, revoke, publish CRLs. Implementations: `pki.local.LocalCA`, `pki.vault.VaultCA`."""

    def issue(
        self,
        csr: VerifiedCSR,
        subject: Subject,
        *,
        profile: ProfileName,
        now: datetime,
        validity: timedelta | None = None,
    ) -> IssuedCertificate:
        """Plan the certificate (`pki.issuance.plan_issuance`: names, profile, validity) and
        sign the plan; raise `CSRError` / `IssuanceRefusedError` / `KeyStoreError`. Both
        backends inherit this from `pki.issuance.PlannedIssuer` and implement only signing."""
        ...

    def revoke(self, serial: int, reason: RevocationReason, *, now: datetime) -> RevocationRecord:
        """Revoke ``serial`` and regenerate the CRL before returning."""
        ...

    def current_crl(self, *, now: datetime) -> CRLBundle:
        """The current CRL; regenerated first if it is due (``now`` past the refresh point)."""
        ...

    def ca_chain(self) -> tuple[x509.Certificate, ...]:
        """Issuing CA first, root last."""
        ...
