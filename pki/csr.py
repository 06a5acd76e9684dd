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

from pki.builder import subject_alt_names
from pki.errors import CSRError
from pki.keys import KeyPolicy, PublicKey, check_public_key
from pki.profiles import Subject

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
    """A CSR parsed once, whose signature verified (proof of possession), whose key the policy
    accepts and whose extensions a leaf may carry. Only `verify_csr` makes one; the HTTP layer
    makes it, the service passes it on, the CA plans from it (`pki.issuance`) without parsing
    the bytes again.

    The names it may carry are checked against the subject the CA will write once that subject
    is known (`require_names`), in the issuance plan.
    """

    public_key: PublicKey
    csr: x509.CertificateSigningRequest
    requested_names: frozenset[x509.GeneralName] | None = None  # the SAN, if the CSR has one

    def verified(self) -> VerifiedCSR:
        """Itself (a `CheckedCSR` that passed)."""
        return self

    def require_names(self, subject: Subject) -> None:
        """(6) A SAN, if present, must name exactly ``subject``: a CSR asking for another
        device's name is refused, not rewritten."""
        if self.requested_names is None:
            return
        expected = set(subject_alt_names(subject))
        if set(self.requested_names) != expected:
            raise CSRError(
                f"CSR names {_describe_names(set(self.requested_names))} but the enrolled "
                f"identity is {_describe_names(expected)}"
            )


@dataclass(frozen=True, slots=True)
class RefusedCSR:
    """A CSR that failed `verify_csr` where the bytes arrived (the HTTP layer), kept so that the
    refusal is raised at the step where the caller decides about CSRs: after authentication,
    so an unauthenticated request is still refused as unauthenticated first."""

    reason: str

    def verified(self) -> VerifiedCSR:
        raise CSRError(self.reason)


CheckedCSR = VerifiedCSR | RefusedCSR


def check_csr(unverified: bytes, policy: KeyPolicy) -> CheckedCSR:
    """`verify_csr` whose refusal is held in a `RefusedCSR` instead of raised now."""
    try:
        return verify_csr(unverified, policy)
    except CSRError as exc:
        return RefusedCSR(str(exc))


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


def _describe_names(names: set[x509.GeneralName] | list[x509.GeneralName]) -> str:
    return ", ".join(sorted(str(n.value) for n in names)) or "(none)"


def verify_csr(
    unverified: bytes, policy: KeyPolicy, *, subject: Subject | None = None
) -> VerifiedCSR:
    """Check a CSR: parse, proof of possession, key, extensions. The one parse of its bytes.

    A caller that already knows the ``subject`` (the operator's ``idmz ca issue``) passes it:
    refusals then name it and step (6) runs at once. The HTTP layer verifies before anything
    is authenticated and does not; the issuance plan runs (6) in any case.

    1. Parse PEM/DER within the size limit.
    2. Hash: SHA-256 or stronger (SHA-1/MD5 signatures are refused).
    3. The key loads and its type and size are accepted by ``policy``.
    4. Proof of possession: the CSR's signature verifies with its own public key.
    5. Extensions: only tolerated types; BasicConstraints must not say CA:true.
    6. (`VerifiedCSR.require_names`, once the subject is known) a SAN, if present, must name
       exactly the subject the CA writes.
    """
    what = f"CSR for {subject}" if subject is not None else "CSR"
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
        raise CSRError(f"{what} must be signed with SHA-256 or stronger; found {found}")
    # (3) before (4): a key cryptography cannot even load (unknown curve, malformed point)
    # would make the signature check raise instead of answer.
    try:
        unchecked_key = csr.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CSRError(
            f"{what}: expected an ECDSA P-256/P-384 or RSA public key; found one "
            "that is unsupported or malformed"
        ) from exc
    key = check_public_key(unchecked_key, policy)
    try:
        proven = csr.is_signature_valid  # (4)
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise CSRError(f"{what} has a malformed signature") from exc
    if not proven:
        raise CSRError(f"{what} failed proof of possession: its signature does not verify")
    try:
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CSRError(f"{what} has malformed extensions") from exc
    requested: frozenset[x509.GeneralName] | None = None
    for ext in extensions:  # (5)
        value = ext.value
        if type(value) not in _TOLERATED:
            raise CSRError(
                f"{what} carries extension {ext.oid.dotted_string} "
                f"({getattr(ext.oid, '_name', 'unknown')}), which a leaf request may not carry"
            )
        if isinstance(value, x509.BasicConstraints) and value.ca:
            raise CSRError(f"{what} asks for CA:true; leaf certificates only")
        if isinstance(value, x509.SubjectAlternativeName):
            requested = frozenset(value)
    verified = VerifiedCSR(public_key=key, csr=csr, requested_names=requested)
    if subject is not None:
        verified.require_names(subject)  # (6)
    return verified
