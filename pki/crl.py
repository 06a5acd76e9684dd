"""Certificate revocation lists (RFC 5280 section 5), fast at 100,000 entries.

`cryptography`'s builder copies its list on every ``add_revoked_certificate`` (quadratic); we
hand it the whole list at construction instead. Each entry carries its reason code (RFC 5280
section 5.3.1) unless it is ``unspecified``, which RFC 5280 says to omit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.authority import CRLBundle, RevocationReason
from pki.builder import signing_hash
from pki.keys import PrivateKey


def build_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    revoked: Iterable[tuple[int, datetime, RevocationReason]],
    crl_number: int,
    now: datetime,
    lifetime: timedelta,
) -> CRLBundle:
    entries = []
    for serial, revoked_at, reason in revoked:
        builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(revoked_at)
        if reason is not RevocationReason.UNSPECIFIED:
            builder = builder.add_extension(x509.CRLReason(reason.x509_flag), critical=False)
        entries.append(builder.build())
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
        revoked_certificates=entries,
    ).sign(issuer_key, signing_hash(issuer_key))
    return CRLBundle(
        crl=crl,
        pem=crl.public_bytes(serialization.Encoding.PEM),
        der=crl.public_bytes(serialization.Encoding.DER),
    )


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """Parse a PEM or DER CRL; raise ValueError on anything else."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)
