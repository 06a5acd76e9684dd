"""How healthy is a CA: expiry, the issuance cliff, CRL freshness. Pure functions over
certificates and CRLs, for `idmz ca status` and the provisioning service's expiry alerts.

The *issuance cliff*: a CA that refuses to issue past its own notAfter (as idmz does, and Vault
does with ``leaf_not_after_behavior=err``) cannot issue a certificate of the default validity
once it is closer than that to its end. Vault users find out when issuance fails (hashicorp/vault
#13193); `ca_health` says when it will happen, ahead of time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from pki.authority import CRLBundle, fingerprint_sha256
from pki.profiles import PROFILES, ProfileName

# Warn this long before the cliff.
CLIFF_WARNING = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class CertificateHealth:
    subject: str
    not_after: datetime
    days_left: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class CAHealth:
    root: CertificateHealth
    issuing: CertificateHealth
    device_issuance_until: datetime  # the last moment a default-validity device cert fits
    crl_number: int | None
    crl_entries: int | None
    crl_next_update: datetime | None
    warnings: tuple[str, ...]


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


def _cert(cert: x509.Certificate, now: datetime) -> CertificateHealth:
    return CertificateHealth(
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        days_left=(cert.not_valid_after_utc - now).days,
        fingerprint=fingerprint_sha256(cert),
    )


def ca_health(
    chain: tuple[x509.Certificate, ...], *, now: datetime, crl: CRLBundle | None = None
) -> CAHealth:
    """``chain`` is issuing CA first, root last (`CertificateAuthority.ca_chain`)."""
    issuing, root = chain[0], chain[-1]
    device_days = PROFILES[ProfileName.DEVICE].default_validity
    cliff = issuing.not_valid_after_utc - device_days
    warnings: list[str] = []
    if cliff - now < CLIFF_WARNING:
        warnings.append(
            f"the issuing CA expires {issuing.not_valid_after_utc:%Y-%m-%d}: {device_days.days}-day "
            f"device certificates cannot be issued after {cliff:%Y-%m-%d}; renew the issuing CA"
        )
    if root.not_valid_after_utc - now < timedelta(days=365):
        warnings.append(
            f"the root CA expires {root.not_valid_after_utc:%Y-%m-%d}; plan the root rollover "
            "(gateways pin its fingerprint)"
        )
    if crl is not None and crl.next_update < now:
        warnings.append(f"the CRL expired at {crl.next_update:%Y-%m-%d %H:%M}Z; publish a new one")
    return CAHealth(
        root=_cert(root, now),
        issuing=_cert(issuing, now),
        device_issuance_until=cliff,
        crl_number=crl_number(crl.crl) if crl else None,
        crl_entries=len(crl.crl) if crl else None,
        crl_next_update=crl.next_update if crl else None,
        warnings=tuple(warnings),
    )
