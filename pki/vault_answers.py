"""What Vault answers is untrusted input: the CA chain it reports and the certificates it signs
are checked here against what idmz planned (ADR 0012, ADR 0018). No I/O; used by `pki.vault`.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from pki.authority import format_serial
from pki.errors import IssuanceRefusedError, KeyStoreError
from pki.issuance import IssuancePlan

# Vault stamps NotBefore 30 s in the past and may round; anything within this is "as asked".
VALIDITY_TOLERANCE = timedelta(minutes=5)


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def checked_chain(pem_text: bytes) -> tuple[x509.Certificate, ...]:
    try:
        chain = tuple(x509.load_pem_x509_certificates(pem_text))
    except ValueError as exc:
        raise KeyStoreError("Vault's ca_chain is not PEM certificates") from exc
    if not chain:
        raise KeyStoreError("Vault's ca_chain is empty; configure the mount's issuer")
    for child, parent in itertools.pairwise(chain):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise KeyStoreError("Vault's ca_chain is out of order or broken") from exc
    try:
        chain[-1].verify_directly_issued_by(chain[-1])
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise KeyStoreError(
            "Vault's ca_chain does not end at a self-signed root; import the issuing CA with "
            "its full chain (set-signed with the root appended)"
        ) from exc
    return chain


def check_returned(cert: x509.Certificate, plan: IssuancePlan, issuing: x509.Certificate) -> None:
    """Refuse a certificate from Vault that says anything other than what was planned."""
    subject, not_after = plan.subject, plan.not_after
    problems: list[str] = []
    if cert.public_key() != plan.public_key:
        problems.append("it certifies a different public key than the CSR's")
    if not issued_by(cert, issuing):
        problems.append("it is not signed by the issuing CA in ca_chain")
    if cert.subject != plan.name:
        cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        problems.append(
            f"CN expected {subject.path!r} alone, found {cns} (set use_csr_common_name=false)"
        )
    try:
        found = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        found = []
    expected = plan.alt_names
    if sorted(map(_name, found)) != sorted(map(_name, expected)):
        problems.append(
            f"SANs expected {sorted(map(_name, expected))}, found {sorted(map(_name, found))} "
            "(set use_csr_sans=false and exclude_cn_from_sans)"
        )
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            problems.append("it says CA:true")
    except x509.ExtensionNotFound:
        # Verifiers (ours included) refuse a leaf without it; Vault omits it by default.
        problems.append("BasicConstraints is missing (set basic_constraints_valid_for_non_ca=true)")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature or usage.key_cert_sign or usage.crl_sign:
            problems.append(
                "keyUsage must include digitalSignature and exclude certificate/CRL signing"
            )
    except x509.ExtensionNotFound:
        problems.append("keyUsage is missing")
    want = plan.extended_key_usage
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = []
    if ekus != [want]:
        names = [getattr(e, "_name", e.dotted_string) for e in ekus]
        problems.append(
            f"extendedKeyUsage expected only {getattr(want, '_name', want.dotted_string)}, "
            f"found {names} (set the role's server_flag/client_flag/code_signing_flag)"
        )
    delta = cert.not_valid_after_utc - not_after
    if abs(delta) > VALIDITY_TOLERANCE:
        problems.append(
            f"valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z, asked until "
            f"{not_after:%Y-%m-%d %H:%M}Z (a role or mount max_ttl cut it; raise it or ask less)"
        )
    if problems:
        raise IssuanceRefusedError(
            f"Vault returned certificate {format_serial(cert.serial_number)} for {subject} that "
            f"does not match the request, revoked it and refused: {'; '.join(problems)}"
        )


def _name(name: x509.GeneralName) -> str:
    value = name.value
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return f"IP:{value}"
    return f"{type(name).__name__}:{value}"


@dataclass(frozen=True, slots=True)
class TokenLease:
    """When the current token was obtained (monotonic seconds) and for how long."""

    obtained_at: float
    lease_s: float
    renewable: bool

    @classmethod
    def from_auth(cls, response: object, *, obtained_at: float) -> TokenLease:
        auth = response.get("auth") if isinstance(response, dict) else None
        if not isinstance(auth, dict):
            return cls(obtained_at=obtained_at, lease_s=0.0, renewable=False)
        return cls(
            obtained_at=obtained_at,
            lease_s=float(auth.get("lease_duration") or 0),
            renewable=bool(auth.get("renewable")),
        )

    def remaining_s(self, now: float) -> float:
        return self.obtained_at + self.lease_s - now


def data_of(response: object, what: str) -> dict[str, Any]:
    """The ``data`` member of Vault's JSON envelope."""
    data = response.get("data") if isinstance(response, dict) else None
    if not isinstance(data, dict):
        raise KeyStoreError(f"Vault's answer to {what} has no data object")
    return data
