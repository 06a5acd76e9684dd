"""Whatever bytes arrive, the parsers answer with the pki error for them, never a crash."""

from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pki.csr import verify_csr
from pki.errors import CertificateError, CSRError, PKIError
from pki.keys import KeyPolicy
from pki.verifier import load_certificates
from tests.pki.conftest import DEVICE
from tests.support.ca import make_csr

# Corrupted serials (zero, negative) make cryptography warn that it will refuse them one day;
# refusing or parsing them is exactly what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

VALID_DER = make_csr(der=True)
VALID_PEM = make_csr()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_are_a_csr_error(blob: bytes) -> None:
    with pytest.raises(CSRError):
        verify_csr(blob, KeyPolicy())


@settings(max_examples=400)
@given(
    st.integers(min_value=0, max_value=len(VALID_DER) - 1), st.integers(min_value=1, max_value=255)
)
def test_any_single_byte_corruption_of_a_csr_is_refused_or_harmless(offset: int, xor: int) -> None:
    der = bytearray(VALID_DER)
    der[offset] ^= xor
    try:
        verified = verify_csr(bytes(der), KeyPolicy())
    except CSRError:
        return
    # Only the signature's outer encoding is malleable (e.g. a BIT STRING "unused bits" count
    # over a zero bit): the signed request, and so the key the CA certifies, must be unchanged.
    original = x509.load_der_x509_csr(VALID_DER)
    assert verified.csr.tbs_certrequest_bytes == original.tbs_certrequest_bytes
    assert verified.public_key == original.public_key()


@settings(max_examples=200)
@given(st.integers(min_value=28, max_value=len(VALID_PEM) - 30), st.sampled_from(b"A/+=\n-x"))
def test_pem_corruption_is_refused_or_parsed_never_a_crash(offset: int, char: int) -> None:
    pem = bytearray(VALID_PEM)
    if pem[offset] == char:
        return
    pem[offset] = char
    try:
        verify_csr(bytes(pem), KeyPolicy())
    except CSRError:
        return


@settings(max_examples=300)
@given(st.binary(max_size=2048))
def test_random_bytes_are_a_certificate_error(blob: bytes) -> None:
    try:
        load_certificates(blob)
    except CertificateError:
        return
    except PKIError as exc:  # pragma: no cover - a different pki error would be a bug
        raise AssertionError(f"unexpected {type(exc).__name__}") from exc


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=600), st.integers(min_value=1, max_value=255))
def test_any_single_byte_corruption_of_a_certificate_is_a_certificate_error(
    offset: int, xor: int
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(CERT_PEM)
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    der[offset % len(der)] ^= xor
    try:
        parsed = load_certificates(bytes(der))
    except CertificateError:
        return
    assert len(parsed) == 1


def _one_ca() -> tuple[bytes, object]:
    import tempfile
    from datetime import UTC, datetime
    from pathlib import Path

    from pki.profiles import ProfileName
    from pki.verifier import ChainVerifier
    from tests.support.ca import make_ca

    now = datetime.now(UTC)
    ca = make_ca(Path(tempfile.mkdtemp()) / "ca", now=now).ca
    try:
        leaf = ca.issue(
            verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now
        ).leaf_pem()
        verifier = ChainVerifier(roots=[ca.ca_chain()[-1]], crls=[ca.current_crl(now=now).crl])
        return leaf, (verifier, ca.issuing_certificate, now)
    finally:
        ca.close()


CERT_PEM, VERIFY = _one_ca()


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=1, max_value=255))
def test_a_corrupted_device_certificate_never_verifies_as_something_else(
    offset: int, xor: int
) -> None:
    from cryptography.hazmat.primitives import serialization

    verifier, issuing, now = VERIFY  # type: ignore[misc]
    original = x509.load_pem_x509_certificate(CERT_PEM)
    der = bytearray(original.public_bytes(serialization.Encoding.DER))
    der[offset % len(der)] ^= xor
    try:
        leaf = load_certificates(bytes(der))[0]
        peer = verifier.verify_device(leaf, [issuing], now=now)
    except CertificateError:
        return
    assert leaf.tbs_certificate_bytes == original.tbs_certificate_bytes
    assert peer.identity == DEVICE
