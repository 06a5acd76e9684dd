"""The gateway runs only models signed by a model-signer the product CA vouches for."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from edge.errors import ConfigError, ModelVerificationError
from edge.model_signing import ModelTrust, VerifiedModel, sign_model, verify_model
from pki.authority import RevocationReason
from pki.identity import DeviceIdentity
from pki.profiles import ProfileName
from tests.edge.harness import train_simulator_model
from tests.support.ca import Issued, ProductCA


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return train_simulator_model("sign-test-7")


def trust(ca: ProductCA, **kw: object) -> ModelTrust:
    now = datetime.now(UTC)
    crl = x509.load_pem_x509_crl(ca.ca.current_crl(now=now).pem)
    return ModelTrust(roots=(ca.ca.root_certificate,), crls=(crl,), **kw)  # type: ignore[arg-type]


def bundle(model: bytes, signer: Issued, *, release: int = 0, rollback_of: int = 0) -> bytes:
    return sign_model(
        model,
        artifact="model.onnx",
        signer_cert_pem=signer.cert_pem,
        signer_key_pem=signer.key_pem,
        chain_pem=signer.chain_pem,
        now=datetime.now(UTC),
        release=release,
        rollback_of=rollback_of,
    )


def verify(model: bytes, sig: bytes, t: ModelTrust) -> VerifiedModel:
    return verify_model(model, sig, t, now=datetime.now(UTC))


def test_a_model_signed_by_a_model_signer_of_the_trusted_ca_verifies(
    test_ca: ProductCA, model_bytes: bytes
) -> None:
    v = verify(model_bytes, bundle(model_bytes, test_ca.signer()), trust(test_ca))
    assert v.version == "sign-test-7"
    assert v.signer == "acme/signer/reliability"
    assert len(v.feature_names) == 9 and v.threshold > 0


def test_a_model_changed_after_signing_is_refused(test_ca: ProductCA, model_bytes: bytes) -> None:
    sig = bundle(model_bytes, test_ca.signer())
    tampered = bytearray(model_bytes)
    tampered[-20] ^= 0x01
    with pytest.raises(ModelVerificationError, match="SHA-256"):
        verify(bytes(tampered), sig, trust(test_ca))


def test_a_bundle_whose_hash_was_edited_to_match_is_refused_by_the_signature(
    test_ca: ProductCA, model_bytes: bytes
) -> None:
    other = train_simulator_model("attacker")
    doc = json.loads(bundle(model_bytes, test_ca.signer()))
    import hashlib

    doc["sha256"] = hashlib.sha256(other).hexdigest()
    with pytest.raises(ModelVerificationError, match="signature does not verify"):
        verify(other, json.dumps(doc).encode(), trust(test_ca))


def test_a_certificate_without_codesigning_cannot_sign_models(
    test_ca: ProductCA, model_bytes: bytes
) -> None:
    device = test_ca.issue(
        DeviceIdentity.parse("acme/plant1/press/line1/cell2/gw-02"), ProfileName.DEVICE
    )
    with pytest.raises(ModelVerificationError, match="signer certificate refused"):
        verify(model_bytes, bundle(model_bytes, device), trust(test_ca))


def test_a_signer_from_an_untrusted_ca_is_refused(
    test_ca: ProductCA, other_ca: ProductCA, model_bytes: bytes
) -> None:
    sig = bundle(model_bytes, other_ca.signer("reliability"))
    with pytest.raises(ModelVerificationError, match="signer certificate refused"):
        verify(model_bytes, sig, trust(test_ca))


def test_an_expired_signer_is_refused(test_ca: ProductCA, model_bytes: bytes) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    signer = test_ca.signer("old-team", now=old, validity=timedelta(days=2))
    with pytest.raises(ModelVerificationError, match="signer certificate refused"):
        verify(model_bytes, bundle(model_bytes, signer), trust(test_ca))


def test_a_revoked_signer_is_refused(test_ca: ProductCA, model_bytes: bytes) -> None:
    signer = test_ca.signer("leaver")
    sig = bundle(model_bytes, signer)
    assert verify(model_bytes, sig, trust(test_ca)).signer == "acme/signer/leaver"
    now = datetime.now(UTC)
    test_ca.ca.revoke(signer.serial, RevocationReason.KEY_COMPROMISE, now=now)
    test_ca.ca.publish_crl(now=now)
    with pytest.raises(ModelVerificationError, match="revoked"):
        verify(model_bytes, sig, trust(test_ca))


def test_a_signer_outside_the_allow_list_is_refused(test_ca: ProductCA, model_bytes: bytes) -> None:
    sig = bundle(model_bytes, test_ca.signer("intern"))
    with pytest.raises(ModelVerificationError, match="allowed_signers"):
        verify(model_bytes, sig, trust(test_ca, allowed_signers=("acme/signer/reliability",)))


def test_a_forged_signature_is_refused(test_ca: ProductCA, model_bytes: bytes) -> None:
    doc = json.loads(bundle(model_bytes, test_ca.signer()))
    raw = bytearray(base64.b64decode(doc["signature"]))
    raw[10] ^= 0xFF
    doc["signature"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ModelVerificationError):
        verify(model_bytes, json.dumps(doc).encode(), trust(test_ca))


def test_garbage_instead_of_a_bundle_is_refused(test_ca: ProductCA, model_bytes: bytes) -> None:
    with pytest.raises(ModelVerificationError, match="malformed"):
        verify(model_bytes, b"{not json", trust(test_ca))


def test_trust_without_a_crl_must_say_unsafe_skip_revocation(test_ca: ProductCA) -> None:
    with pytest.raises(ConfigError, match="unsafe_skip_revocation"):
        ModelTrust(roots=(test_ca.ca.root_certificate,))


def idmz(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idmz", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_signs_and_verifies_and_exits_1_on_a_refused_model(
    test_ca: ProductCA, tmp_path: Path, model_bytes: bytes
) -> None:
    signer = test_ca.signer()
    model = tmp_path / "model.onnx"
    model.write_bytes(model_bytes)
    (tmp_path / "s.pem").write_bytes(signer.cert_pem)
    (tmp_path / "s.key").write_bytes(signer.key_pem)
    (tmp_path / "chain.pem").write_bytes(signer.chain_pem)
    r = idmz(
        "model",
        "sign",
        "--model",
        str(model),
        "--cert",
        str(tmp_path / "s.pem"),
        "--key",
        str(tmp_path / "s.key"),
        "--chain",
        str(tmp_path / "chain.pem"),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "model.onnx.sig").read_text())["model_version"] == "sign-test-7"
    test_ca.ca.publish_crl(now=datetime.now(UTC))
    r = idmz(
        "model",
        "verify",
        "--model",
        str(model),
        "--root",
        str(test_ca.root_path),
        "--crl",
        str(test_ca.crl_path),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["signer"] == "acme/signer/reliability"
    model.write_bytes(model_bytes + b"\x00")
    r = idmz(
        "model",
        "verify",
        "--model",
        str(model),
        "--root",
        str(test_ca.root_path),
        "--crl",
        str(test_ca.crl_path),
    )
    assert r.returncode == 1
    assert "SHA-256" in r.stderr
