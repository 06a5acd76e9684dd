"""Checking an untrusted certificate signing request (RFC 2986).

The CA only takes the public key from a CSR, after proof of possession. Names and extensions in
a CSR are never copied into a certificate: the CA writes them from the registry. A CSR that asks
for more than a leaf certificate (CA:true, unexpected extensions, names for someone else) is
refused rather than silently trimmed, so that a misconfigured or malicious client is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from pki.errors import CSRError
from pki.identity import ConsumerIdentity, DeviceIdentity
from pki.keys import KeyPolicy, PublicKey, check_public_key
from pki.profiles import SignerName, Subject

MAX_CSR_BYTES = 16 * 1024

# Signature algorithms cryptography cannot name (it refuses them), for clear refusals.
_SIGNATURE_NAMES = {
    "1.2.840.113549.1.1.4": "md5WithRSAEncryption",
    "1.2.840.113549.1.1.5": "sha1WithRSAEncryption",
    "1.2.840.10045.4.1": "ecdsa-with-SHA1",
}

# Extensions a CSR may carry; their values are checked or ignored, never copied.
_TOLERATED = {
    x509.SubjectAlternativeName,  # must name exactly the subject the CA will write
    x509.BasicConstraints,  # only CA:false
    x509.KeyUsage,  # the profile decides
    x509.ExtendedKeyUsage,  # the profile decides
    x509.SubjectKeyIdentifier,
}


@dataclass(frozen=True, slots=True)
class VerifiedCSR:
    """A CSR whose signature verified and whose key the policy accepts."""

    public_key: PublicKey
    csr: x509.CertificateSigningRequest


def load_csr(unverified: bytes) -> x509.CertificateSigningRequest:
    """Parse PEM or DER; raise `CSRError` for anything else."""
    if not isinstance(unverified, bytes | bytearray):
        raise CSRError(f"expected CSR bytes; found {type(unverified).__name__}")
    if len(unverified) > MAX_CSR_BYTES:
        raise CSRError(f"CSR is {len(unverified)} bytes; the limit is {MAX_CSR_BYTES}")
    data = bytes(unverified)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CSRError(
            "expected a PEM or DER PKCS#10 certificate request; could not parse it"
        ) from exc


def _expected_names(subject: Subject) -> set[x509.GeneralName]:
    if isinstance(subject, DeviceIdentity | ConsumerIdentity | SignerName):
        return {x509.UniformResourceIdentifier(subject.spiffe_id)}
    names: set[x509.GeneralName] = {x509.DNSName(n) for n in subject.dns_names}
    names |= {x509.IPAddress(ip) for ip in subject.ip_addresses}
    return names


def _describe_names(names: set[x509.GeneralName] | list[x509.GeneralName]) -> str:
    return ", ".join(sorted(str(n.value) for n in names)) or "(none)"


def verify_csr(unverified: bytes, subject: Subject, policy: KeyPolicy) -> VerifiedCSR:
    """Check a CSR for ``subject``: parse, proof of possession, key, extensions, names.

    1. Parse PEM/DER within the size limit.
    2. Hash: SHA-256 or stronger (SHA-1/MD5 signatures are refused).
    3. The key loads and its type and size are accepted by ``policy``.
    4. Proof of possession: the CSR's signature verifies with its own public key.
    5. Extensions: only tolerated types; BasicConstraints must not say CA:true.
    6. A SAN, if present, must name exactly ``subject`` (a CSR asking for another device's
       name is refused, not rewritten).
    """
    csr = load_csr(unverified)  # (1)
    # (2) cryptography will not verify a SHA-1 signature at all, and "signed with SHA-1" is a
    # clearer refusal than "proof of possession failed".
    try:
        algorithm = csr.signature_hash_algorithm
        found = algorithm.name if algorithm is not None else "none"
    except UnsupportedAlgorithm:
        algorithm, found = (
            None,
            _SIGNATURE_NAMES.get(
                csr.signature_algorithm_oid.dotted_string, csr.signature_algorithm_oid.dotted_string
            ),
        )
    if not isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        raise CSRError(f"CSR for {subject} must be signed with SHA-256 or stronger; found {found}")
    # (3) before (4): a key cryptography cannot even load (unknown curve, malformed point)
    # would make the signature check raise instead of answer.
    try:
        unchecked_key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CSRError(
            f"CSR for {subject}: expected an ECDSA P-256/P-384 or RSA public key; found one "
            "that is unsupported or malformed"
        ) from exc
    key = check_public_key(unchecked_key, policy)
    try:
        proven = csr.is_signature_valid  # (4)
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CSRError(f"CSR for {subject} has a malformed signature") from exc
    if not proven:
        raise CSRError(
            f"CSR for {subject} failed proof of possession: its signature does not verify"
        )
    try:
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CSRError(f"CSR for {subject} has malformed extensions") from exc
    for ext in extensions:  # (5)
        value = ext.value
        if type(value) not in _TOLERATED:
            raise CSRError(
                f"CSR for {subject} carries extension {ext.oid.dotted_string} "
                f"({getattr(ext.oid, '_name', 'unknown')}), which a leaf request may not carry"
            )
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise CSRError(f"CSR for {subject} asks for CA:true; leaf certificates only")
        if isinstance(value, x509.SubjectAlternativeName):  # (6)
            requested = set(value)
            expected = _expected_names(subject)
            if requested != expected:
                raise CSRError(
                    f"CSR names {_describe_names(requested)} but the enrolled identity is "
                    f"{_describe_names(expected)}"
                )
    return VerifiedCSR(public_key=key, csr=csr)
