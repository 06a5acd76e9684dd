"""Building certificates from profiles. The CA writes every name and extension itself.

Leaf certificates follow RFC 5280 and, for devices, the X.509-SVID profile: exactly one URI SAN,
BasicConstraints CA:false (critical), KeyUsage digitalSignature (critical), one EKU. CA
certificates carry BasicConstraints CA:true with a path length (root 1, issuing 0), KeyUsage
keyCertSign|cRLSign (critical), SKI and, below the root, AKI.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.keys import PrivateKey, PublicKey
from pki.profiles import PROFILES, ProfileName, SignerName, Subject

# Certificates are back-dated by this much so a device whose clock is a little behind still
# accepts a fresh certificate (RFC 5280 does not forbid it; Let's Encrypt does the same).
CLOCK_SKEW = timedelta(minutes=5)


def signing_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for P-384 keys, SHA-256 otherwise (matching strength, RFC 5480 section 4)."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def subject_name(subject: Subject) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject.path)])


def subject_alt_names(subject: Subject) -> list[x509.GeneralName]:
    if isinstance(subject, DeviceIdentity | ConsumerIdentity | SignerName):
        return [x509.UniformResourceIdentifier(subject.spiffe_id)]
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in subject.dns_names]
    names += [x509.IPAddress(ip) for ip in subject.ip_addresses]
    return names


def build_leaf(
    *,
    public_key: PublicKey,
    subject: Subject,
    profile: ProfileName,
    issuer: x509.Certificate,
    issuer_key: PrivateKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    authority_key_identifier: x509.AuthorityKeyIdentifier | None = None,
) -> x509.Certificate:
    """``authority_key_identifier`` may be passed precomputed (it is the same for every leaf of
    one issuer); otherwise it is derived from ``issuer_key``."""
    spec = PROFILES[profile]
    aki = authority_key_identifier or x509.AuthorityKeyIdentifier.from_issuer_public_key(
        issuer_key.public_key()
    )
    server_rsa = profile is ProfileName.SERVER and isinstance(public_key, rsa.RSAPublicKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_name(subject))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=server_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([spec.extended_key_usage]), critical=False)
        # X.509-SVID: the SAN is critical when the subject DN is empty; ours carries a CN, so
        # the SAN need not be critical, and a non-critical SAN keeps older TLS stacks happy.
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(subject)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )
    return builder.sign(issuer_key, signing_hash(issuer_key))


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def ca_name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def build_root(
    *, key: PrivateKey, name: x509.Name, now: datetime, validity: timedelta
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, signing_hash(key))
    )


def build_intermediate(
    *,
    public_key: PublicKey,
    name: x509.Name,
    root: x509.Certificate,
    root_key: PrivateKey,
    now: datetime,
    validity: timedelta,
) -> x509.Certificate:
    not_after = min(now + validity, root.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, signing_hash(root_key))
    )


def build_intermediate_request(key: PrivateKey, name: x509.Name) -> x509.CertificateSigningRequest:
    """The CSR an online issuing CA sends to the offline root (``ca init --intermediate-only``)."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, signing_hash(key))
    )
