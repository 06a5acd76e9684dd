"""Issuance from a CSR: every refusal names what was expected and found, and issues nothing."""

from __future__ import annotations

import ipaddress
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.csr import verify_csr
from pki.errors import CSRError, IssuanceRefusedError, MalformedIdentityError, PKIError
from pki.identity import ConsumerIdentity
from pki.keys import KeyPolicy
from pki.profiles import ProfileName, ServerName, SignerName
from tests.pki.conftest import DEVICE, OTHER_DEVICE
from tests.support.ca import PASSPHRASE, ProductCA, key_pem, make_csr

DEV = ProfileName.DEVICE


def refused(
    fx: ProductCA, csr: bytes, error: type[PKIError], *, subject=DEVICE, profile=DEV, validity=None
) -> str:  # type: ignore[no-untyped-def]
    """Issue, expect ``error``, check that nothing was issued and nothing secret leaked."""
    before = fx.ledger_rows()
    with pytest.raises(error) as info:
        fx.ca.issue(
            verify_csr(csr, KeyPolicy(), subject=subject),
            subject,
            profile=profile,
            now=fx.now,
            validity=validity,
        )
    assert fx.ledger_rows() == before, "a refused request must not reach the ledger"
    text = str(info.value)
    assert PASSPHRASE.decode() not in text
    assert "BEGIN" not in text, "error messages never carry PEM bodies"
    return text


# -- the good path -------------------------------------------------------------------------


def test_device_certificate_is_an_x509_svid_with_cn_mirroring_the_path(local_ca: ProductCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = local_ca.ca.issue(
        verify_csr(make_csr(key), KeyPolicy()), DEVICE, profile=DEV, now=local_ca.now
    )
    cert = issued.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(DEVICE.spiffe_id)]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == DEVICE.path
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc - local_ca.now <= timedelta(days=90)
    assert local_ca.ca.lookup(cert.serial_number) is not None
    assert issued.chain == local_ca.ca.ca_chain()


def test_names_in_the_csr_subject_are_never_copied(local_ca: ProductCA) -> None:
    issued = local_ca.ca.issue(
        verify_csr(make_csr(cn="admin"), KeyPolicy()), DEVICE, profile=DEV, now=local_ca.now
    )
    assert "admin" not in issued.certificate.subject.rfc4514_string()


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()), id="p384"),
        pytest.param(
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), id="rsa2048"
        ),
    ],
)
def test_p384_and_rsa_2048_keys_are_accepted(local_ca: ProductCA, key) -> None:  # type: ignore[no-untyped-def]
    issued = local_ca.ca.issue(
        verify_csr(make_csr(key()), KeyPolicy()), DEVICE, profile=DEV, now=local_ca.now
    )
    assert (
        issued.certificate.public_key().public_numbers()
        == issued.certificate.public_key().public_numbers()
    )


def test_der_csr_is_accepted(local_ca: ProductCA) -> None:
    local_ca.ca.issue(
        verify_csr(make_csr(der=True), KeyPolicy()), DEVICE, profile=DEV, now=local_ca.now
    )


def test_csr_san_naming_exactly_the_enrolled_identity_is_accepted(local_ca: ProductCA) -> None:
    csr = make_csr(sans=[x509.UniformResourceIdentifier(DEVICE.spiffe_id)])
    local_ca.ca.issue(verify_csr(csr, KeyPolicy()), DEVICE, profile=DEV, now=local_ca.now)


def test_server_profile_carries_dns_and_ip_sans_and_server_auth(local_ca: ProductCA) -> None:
    names = ServerName.parse("relay.plant1.example,127.0.0.1")
    cert = local_ca.ca.issue(
        verify_csr(make_csr(), KeyPolicy()), names, profile=ProfileName.SERVER, now=local_ca.now
    ).certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["relay.plant1.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_consumer_and_model_signer_profiles(local_ca: ProductCA) -> None:
    consumer = ConsumerIdentity.parse("acme/it/historian")
    c = local_ca.ca.issue(
        verify_csr(make_csr(), KeyPolicy()),
        consumer,
        profile=ProfileName.CONSUMER,
        now=local_ca.now,
    )
    assert (
        c.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        == "acme/it/historian"
    )
    signer = SignerName.parse("acme/signer/models")
    s = local_ca.ca.issue(
        verify_csr(make_csr(), KeyPolicy()),
        signer,
        profile=ProfileName.MODEL_SIGNER,
        now=local_ca.now,
    )
    eku = s.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "blob",
    [
        pytest.param(b"", id="empty"),
        pytest.param(
            b"-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n-----END CERTIFICATE REQUEST-----\n",
            id="bad-pem",
        ),
        pytest.param(b"\x30\x82\x01\x00garbage", id="bad-der"),
        pytest.param(b"A" * 20000, id="oversized"),
    ],
)
def test_malformed_csr_is_refused(local_ca: ProductCA, blob: bytes) -> None:
    text = refused(local_ca, blob, CSRError)
    assert "expected" in text or "limit" in text


def test_csr_whose_signature_does_not_verify_fails_proof_of_possession(local_ca: ProductCA) -> None:
    der = bytearray(make_csr(der=True))
    der[-5] ^= 0x01  # inside the signature BIT STRING
    text = refused(local_ca, bytes(der), CSRError)
    assert "proof of possession" in text and DEVICE.path in text


def test_csr_with_another_keys_signature_fails_proof_of_possession(local_ca: ProductCA) -> None:
    # Splice: the public key of one CSR with the signature of another.
    a = x509.load_der_x509_csr(make_csr(der=True))
    b = x509.load_der_x509_csr(make_csr(der=True))
    spliced = a.tbs_certrequest_bytes
    der = bytes(b.public_bytes(serialization.Encoding.DER))
    forged = der.replace(b.tbs_certrequest_bytes, spliced)
    refused(local_ca, forged, CSRError)


def test_rsa_1024_is_refused(local_ca: ProductCA) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the attack
    text = refused(local_ca, make_csr(key), CSRError)
    assert "at least 2048" in text and "1024" in text


@pytest.mark.parametrize(
    "curve", [ec.SECP521R1(), ec.SECP256K1(), ec.SECP224R1()], ids=lambda c: c.name
)
def test_other_curves_are_refused(local_ca: ProductCA, curve: ec.EllipticCurve) -> None:
    text = refused(local_ca, make_csr(ec.generate_private_key(curve)), CSRError)
    assert curve.name in text and "secp256r1" in text


def test_csr_asking_for_ca_true_is_refused(local_ca: ProductCA) -> None:
    csr = make_csr(extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    assert "CA:true" in refused(local_ca, csr, CSRError)


def test_csr_carrying_sans_for_another_device_is_refused(local_ca: ProductCA) -> None:
    csr = make_csr(sans=[x509.UniformResourceIdentifier(OTHER_DEVICE.spiffe_id)])
    text = refused(local_ca, csr, CSRError)
    assert OTHER_DEVICE.path in text and DEVICE.path in text


def test_csr_adding_a_second_name_to_its_own_is_refused(local_ca: ProductCA) -> None:
    csr = make_csr(
        sans=[x509.UniformResourceIdentifier(DEVICE.spiffe_id), x509.DNSName("broker.example")]
    )
    refused(local_ca, csr, CSRError)


def test_csr_with_unexpected_extension_is_refused(local_ca: ProductCA) -> None:
    ext = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example")], excluded_subtrees=None)
    text = refused(local_ca, make_csr(extensions=[(ext, True)]), CSRError)
    assert "2.5.29.30" in text


def test_sha1_signed_csr_is_refused(local_ca: ProductCA, tmp_path: Path) -> None:
    # cryptography will not even make a SHA-1 signature; openssl still will.
    key = tmp_path / "key.pem"
    key.write_bytes(key_pem(ec.generate_private_key(ec.SECP256R1())))
    csr = subprocess.run(
        ["openssl", "req", "-new", "-key", str(key), "-sha1", "-subj", "/CN=x", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    text = refused(local_ca, csr, CSRError)
    assert "SHA-256" in text and "sha1" in text


def test_validity_longer_than_the_profile_maximum_is_refused(local_ca: ProductCA) -> None:
    text = refused(local_ca, make_csr(), IssuanceRefusedError, validity=timedelta(days=398))
    assert "397" in text and "398" in text


def test_zero_validity_is_refused(local_ca: ProductCA) -> None:
    refused(local_ca, make_csr(), IssuanceRefusedError, validity=timedelta(0))


def test_validity_outliving_the_issuing_ca_is_refused_not_truncated(local_ca: ProductCA) -> None:
    issuing_end = local_ca.ca.issuing_certificate.not_valid_after_utc
    local_ca.now = issuing_end - timedelta(days=30)
    text = refused(local_ca, make_csr(), IssuanceRefusedError)  # 90-day default
    assert "outlive the issuing CA" in text and f"{issuing_end:%Y-%m-%d}" in text


def test_subject_of_the_wrong_kind_for_the_profile_is_refused(local_ca: ProductCA) -> None:
    refused(local_ca, make_csr(), MalformedIdentityError, profile=ProfileName.SERVER)


def test_naive_now_is_a_configuration_error_not_a_crash(local_ca: ProductCA) -> None:
    from pki.errors import ConfigError

    local_ca.now = local_ca.now.replace(tzinfo=None)
    with pytest.raises(ConfigError, match="timezone-aware"):
        local_ca.ca.issue(
            verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=DEV, now=local_ca.now
        )


def test_issuing_before_the_issuing_ca_is_valid_is_refused(local_ca: ProductCA) -> None:
    local_ca.now = local_ca.ca.issuing_certificate.not_valid_before_utc - timedelta(days=1)
    assert "check this host's clock" in refused(local_ca, make_csr(), IssuanceRefusedError)


def test_ledger_failures_are_key_store_errors_not_crashes(local_ca: ProductCA) -> None:
    from pki.errors import KeyStoreError

    issued = local_ca.ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=DEV, now=local_ca.now
    )
    with pytest.raises(KeyStoreError, match="record issued failed"):
        local_ca.ca.ledger.record_issued(
            serial=issued.serial,  # a duplicate serial: the ledger's primary key refuses it
            subject=DEVICE.path,
            profile="device",
            fingerprint=issued.fingerprint,
            not_after=issued.not_after,
            now=local_ca.now,
        )
    assert local_ca.ledger_rows() == 1
