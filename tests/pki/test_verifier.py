"""Chain verification returns a trusted identity or raises, naming what was wrong."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.authority import RevocationReason
from pki.builder import build_leaf
from pki.crl import build_crl
from pki.csr import verify_csr
from pki.errors import CertificateError, RevokedCertificateError
from pki.identity import ConsumerIdentity
from pki.keys import KeyPolicy, PrivateKey, load_private_key
from pki.profiles import ProfileName, SignerName
from pki.verifier import ChainVerifier
from tests.pki.conftest import DEVICE, OTHER_DEVICE
from tests.support.ca import PASSPHRASE, ProductCA, make_ca, make_csr


def issuing_key(fx: ProductCA) -> PrivateKey:
    return load_private_key(fx.dir / "issuing.key.pem", PASSPHRASE)


def verifier(fx: ProductCA) -> ChainVerifier:
    crl = fx.ca.current_crl(now=fx.now).crl
    return ChainVerifier(roots=[fx.ca.ca_chain()[-1]], crls=[crl])


def forge_leaf(
    fx: ProductCA,
    *,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    ca: bool = False,
    eku: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
    sans: list[x509.GeneralName] | None = None,
    cn: str | None = None,
    signer: PrivateKey | None = None,
    issuer: x509.Certificate | None = None,
) -> x509.Certificate:
    """A leaf signed by the issuing CA that breaks exactly one rule (what a buggy or hostile CA,
    or a stolen issuing key, could produce)."""
    issuer = issuer or fx.ca.issuing_certificate
    key = ec.generate_private_key(ec.SECP256R1())
    sign_with = signer or issuing_key(fx)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or DEVICE.path)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or fx.now - timedelta(minutes=5))
        .not_valid_after(not_after or fx.now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(sans or [x509.UniformResourceIdentifier(DEVICE.spiffe_id)]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(sign_with.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    return builder.sign(sign_with, hashes.SHA256())


def issue(fx: ProductCA, subject=DEVICE, profile=ProfileName.DEVICE) -> x509.Certificate:  # type: ignore[no-untyped-def]
    return fx.ca.issue(
        verify_csr(make_csr(), KeyPolicy()), subject, profile=profile, now=fx.now
    ).certificate


def test_fresh_device_certificate_verifies_to_its_identity(local_ca: ProductCA) -> None:
    cert = issue(local_ca)
    peer = verifier(local_ca).verify_device(
        cert, [local_ca.ca.issuing_certificate], now=local_ca.now
    )
    assert peer.identity == DEVICE
    assert peer.serial == cert.serial_number
    assert peer.chain[-1] == local_ca.ca.ca_chain()[-1]


def test_expired_certificate_is_refused(local_ca: ProductCA) -> None:
    cert = forge_leaf(
        local_ca,
        not_before=local_ca.now - timedelta(days=10),
        not_after=local_ca.now - timedelta(days=1),
    )
    with pytest.raises(CertificateError, match="does not verify"):
        verifier(local_ca).verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_not_yet_valid_certificate_is_refused(local_ca: ProductCA) -> None:
    cert = forge_leaf(local_ca, not_before=local_ca.now + timedelta(days=1))
    with pytest.raises(CertificateError, match="does not verify"):
        verifier(local_ca).verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_certificate_under_an_expired_issuing_ca_is_refused(tmp_path: Path, now: datetime) -> None:
    past = now - timedelta(days=10)
    fx = make_ca(tmp_path / "old", now=now, age=now - past, issuing_validity=timedelta(days=5))
    ca = fx.ca
    cert = forge_leaf(fx, not_before=past, not_after=now + timedelta(days=1))
    v = ChainVerifier(roots=[ca.ca_chain()[-1]], crls=[ca.publish_crl(now=now).crl])
    with pytest.raises(CertificateError, match="does not verify"):
        v.verify_device(cert, [ca.issuing_certificate], now=now)
    ca.close()


def test_certificate_from_an_unknown_ca_is_refused(local_ca: ProductCA, tmp_path: Path) -> None:
    rogue = make_ca(tmp_path / "rogue", now=local_ca.now).ca
    cert = rogue.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=local_ca.now
    ).certificate
    # Even with the rogue issuing CA handed over as an intermediate, it does not chain to our root.
    with pytest.raises(CertificateError, match="does not verify"):
        verifier(local_ca).verify_device(cert, [rogue.issuing_certificate], now=local_ca.now)
    rogue.close()


def test_revoked_certificate_is_refused(local_ca: ProductCA) -> None:
    cert = issue(local_ca)
    local_ca.ca.revoke(cert.serial_number, RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    with pytest.raises(RevokedCertificateError, match=format(cert.serial_number, "x")):
        verifier(local_ca).verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_ca_true_leaf_is_refused(local_ca: ProductCA) -> None:
    cert = forge_leaf(local_ca, ca=True)
    with pytest.raises(CertificateError):
        verifier(local_ca).verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_server_certificate_cannot_act_as_a_device(local_ca: ProductCA) -> None:
    cert = forge_leaf(local_ca, eku=ExtendedKeyUsageOID.SERVER_AUTH)
    with pytest.raises(CertificateError, match="does not verify"):
        verifier(local_ca).verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_two_uri_sans_are_refused(local_ca: ProductCA) -> None:
    sans = [x509.UniformResourceIdentifier(d.spiffe_id) for d in (DEVICE, OTHER_DEVICE)]
    cert = forge_leaf(local_ca, sans=sans)
    with pytest.raises(CertificateError, match="exactly one URI SAN; found 2"):
        verifier(local_ca).verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_cn_that_does_not_mirror_the_uri_san_is_refused(local_ca: ProductCA) -> None:
    cert = forge_leaf(local_ca, cn=OTHER_DEVICE.path)
    with pytest.raises(CertificateError, match="CN must equal") as info:
        verifier(local_ca).verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)
    assert DEVICE.path in str(info.value) and OTHER_DEVICE.path in str(info.value)


def test_consumer_certificate_is_not_a_device_and_vice_versa(local_ca: ProductCA) -> None:
    consumer = issue(local_ca, ConsumerIdentity.parse("acme/it/historian"), ProfileName.CONSUMER)
    device = issue(local_ca)
    v, chain = verifier(local_ca), [local_ca.ca.issuing_certificate]
    with pytest.raises(CertificateError):
        v.verify_device(consumer, chain, now=local_ca.now)
    with pytest.raises(CertificateError):
        v.verify_consumer(device, chain, now=local_ca.now)
    assert v.verify_consumer(consumer, chain, now=local_ca.now).identity.name == "historian"


def test_model_signer_verifies_only_as_a_signer(local_ca: ProductCA) -> None:
    signer = issue(local_ca, SignerName.parse("acme/signer/models"), ProfileName.MODEL_SIGNER)
    v, chain = verifier(local_ca), [local_ca.ca.issuing_certificate]
    assert v.verify_signer(signer, chain, now=local_ca.now).identity.name == "models"
    with pytest.raises(CertificateError):
        v.verify_signer(issue(local_ca), chain, now=local_ca.now)  # clientAuth, no codeSigning
    with pytest.raises(CertificateError):
        v.verify_device(signer, chain, now=local_ca.now)


def test_stale_crl_fails_closed(local_ca: ProductCA) -> None:
    cert = issue(local_ca)
    v = verifier(local_ca)  # CRL valid for one day
    later = local_ca.now + timedelta(days=2)
    with pytest.raises(CertificateError, match="stale revocation data"):
        v.verify_device(cert, [local_ca.ca.issuing_certificate], now=later)


def test_crl_from_the_future_is_refused(local_ca: ProductCA) -> None:
    cert = issue(local_ca)
    future = local_ca.ca.publish_crl(now=local_ca.now + timedelta(hours=2)).crl
    v = ChainVerifier(roots=[local_ca.ca.ca_chain()[-1]], crls=[future])
    with pytest.raises(CertificateError, match="not valid until"):
        v.verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_crl_signed_by_the_wrong_key_is_refused(local_ca: ProductCA) -> None:
    cert = issue(local_ca)
    forged = build_crl(
        issuer=local_ca.ca.issuing_certificate,  # right name, wrong key
        issuer_key=ec.generate_private_key(ec.SECP256R1()),
        revoked=[],
        crl_number=99,
        now=local_ca.now,
        lifetime=timedelta(days=1),
    )
    v = ChainVerifier(roots=[local_ca.ca.ca_chain()[-1]], crls=[forged.crl])
    with pytest.raises(CertificateError, match="invalid signature"):
        v.verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_missing_crl_fails_closed(local_ca: ProductCA) -> None:
    v = ChainVerifier(roots=[local_ca.ca.ca_chain()[-1]])
    with pytest.raises(CertificateError, match="no CRL"):
        v.verify_device(issue(local_ca), [local_ca.ca.issuing_certificate], now=local_ca.now)


def test_verifier_without_roots_refuses_to_exist() -> None:
    with pytest.raises(CertificateError, match="at least one trusted root"):
        ChainVerifier(roots=[])


def test_leaf_built_by_the_product_builder_round_trips(local_ca: ProductCA) -> None:
    # build_leaf is public API; what it makes must verify like an issued certificate.
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_leaf(
        public_key=key.public_key(),
        subject=DEVICE,
        profile=ProfileName.DEVICE,
        issuer=local_ca.ca.issuing_certificate,
        issuer_key=issuing_key(local_ca),
        serial=x509.random_serial_number(),
        not_before=local_ca.now - timedelta(minutes=1),
        not_after=local_ca.now + timedelta(days=1),
    )
    assert (
        verifier(local_ca)
        .verify_device(cert, [local_ca.ca.issuing_certificate], now=local_ca.now)
        .identity
        == DEVICE
    )


def test_with_old_and_new_crls_loaded_the_newest_decides(local_ca: ProductCA) -> None:
    cert = issue(local_ca)
    old = local_ca.ca.current_crl(now=local_ca.now).crl
    local_ca.ca.revoke(
        cert.serial_number, RevocationReason.KEY_COMPROMISE, now=local_ca.now + timedelta(minutes=1)
    )
    new = local_ca.ca.current_crl(now=local_ca.now + timedelta(minutes=1)).crl
    for crls in ([old, new], [new, old]):
        v = ChainVerifier(roots=[local_ca.ca.ca_chain()[-1]], crls=crls)
        with pytest.raises(RevokedCertificateError):
            v.verify_device(
                cert, [local_ca.ca.issuing_certificate], now=local_ca.now + timedelta(minutes=2)
            )


def test_a_forged_crl_next_to_the_real_one_is_ignored(local_ca: ProductCA) -> None:
    cert = issue(local_ca)
    local_ca.ca.revoke(cert.serial_number, RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    real = local_ca.ca.current_crl(now=local_ca.now).crl
    forged = build_crl(  # claims nothing is revoked, newer, right name, wrong key
        issuer=local_ca.ca.issuing_certificate,
        issuer_key=ec.generate_private_key(ec.SECP256R1()),
        revoked=[],
        crl_number=10**6,
        now=local_ca.now + timedelta(minutes=1),
        lifetime=timedelta(days=1),
    )
    v = ChainVerifier(roots=[local_ca.ca.ca_chain()[-1]], crls=[forged.crl, real])
    with pytest.raises(RevokedCertificateError):
        v.verify_device(
            cert, [local_ca.ca.issuing_certificate], now=local_ca.now + timedelta(minutes=2)
        )
