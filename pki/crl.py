"""Certificate revocation lists (RFC 5280 section 5), fast at 100,000 entries.

* `cryptography`'s builder copies its list on every ``add_revoked_certificate`` (quadratic); the
  whole list is handed over at construction instead.
* The revoked set only grows, so `RevokedEntries` builds each entry once and reuses it: after the
  first CRL of a process, publishing after one more revocation costs one new entry, not 100,000.
* The CRL is serialized once (DER); the PEM is the DER in base64 (RFC 7468), not a second
  serialization.

Each entry carries its reason code (RFC 5280 section 5.3.1) unless it is ``unspecified``, which
RFC 5280 says to omit.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.authority import CRLBundle, RevocationReason
from pki.builder import signing_hash
from pki.keys import PrivateKey


def revoked_entry(
    serial: int, revoked_at: datetime, reason: RevocationReason
) -> x509.RevokedCertificate:
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
    if reason is not RevocationReason.UNSPECIFIED:
        builder = builder.add_extension(x509.CRLReason(reason.x509_flag), critical=False)
    return builder.build()


class RevokedEntries:
    """A cache of CRL entries keyed by the ledger's raw row ``(serial hex, revoked_at ISO,
    reason)``; a row that changes is simply a new key."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], x509.RevokedCertificate] = {}

    def entries(self, rows: Iterable[tuple[str, str, str]]) -> list[x509.RevokedCertificate]:
        cache, out = self._cache, []
        for row in rows:
            entry = cache.get(row)
            if entry is None:
                serial, revoked_at, reason = row
                entry = revoked_entry(
                    int(serial, 16), datetime.fromisoformat(revoked_at), RevocationReason(reason)
                )
                cache[row] = entry
            out.append(entry)
        return out


def sign_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    entries: Sequence[x509.RevokedCertificate],
    crl_number: int,
    now: datetime,
    lifetime: timedelta,
) -> CRLBundle:
    crl = x509.CertificateRevocationListBuilder(
        issuer_name=issuer.subject,
        last_update=now,
        next_update=now + lifetime,
        extensions=[
            x509.Extension(
                x509.AuthorityKeyIdentifier.oid,
                False,
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            ),
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(crl_number)),
        ],
        revoked_certificates=list(entries),
    ).sign(issuer_key, signing_hash(issuer_key))
    der = crl.public_bytes(serialization.Encoding.DER)
    return CRLBundle(crl=crl, pem=crl_pem_from_der(der), der=der)


def build_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Iterable[tuple[int, datetime, RevocationReason]],
    crl_number: int,
    now: datetime,
    lifetime: timedelta,
) -> CRLBundle:
    return sign_crl(
        issuer=issuer,
        issuer_key=issuer_key,
        entries=[revoked_entry(s, t, r) for s, t, r in revoked],
        crl_number=crl_number,
        now=now,
        lifetime=lifetime,
    )


def crl_pem_from_der(der: bytes) -> bytes:
    """RFC 7468 textual encoding: 64-character base64 lines between the X509 CRL labels."""
    b64 = base64.b64encode(der)
    body = b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return b"-----BEGIN X509 CRL-----\n" + body + b"\n-----END X509 CRL-----\n"


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Parse a PEM or DER CRL; raise ValueError on anything else."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)
