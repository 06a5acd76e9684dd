"""A gateway never goes back to an older model by itself (security review S9): whoever can
write the model directory can bring back an old, validly signed model (a laxer threshold, a
known blind spot); only a rollback that says so, signed by a rollback signer, may."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from edge.errors import ModelRollbackError, ModelVerificationError
from edge.model_release import (
    AcceptedRelease,
    admit_release,
    read_accepted,
    record_accepted,
    release_state_path,
)
from edge.model_signing import ModelTrust, VerifiedModel, verify_model
from tests.edge.harness import train_simulator_model
from tests.edge.test_cli_gateway import make_config
from tests.edge.test_model_signing import bundle
from tests.support.ca import ProductCA

OPERATOR = "acme/signer/operations"


def sha(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {v: train_simulator_model(v) for v in ("strict-2", "lax-1", "next-3")}


def trust(ca: ProductCA, *, rollback_signers: tuple[str, ...] = (OPERATOR,)) -> ModelTrust:
    crl = x509.load_pem_x509_crl(ca.ca.current_crl(now=datetime.now(UTC)).pem)
    return ModelTrust((ca.ca.root_certificate,), (crl,), rollback_signers=rollback_signers)


class Gateway:
    """The model directory of one gateway: what its start would accept, and remember."""

    def __init__(self, directory: Path, t: ModelTrust) -> None:
        self.state = release_state_path(directory / "model.onnx")
        self.trust = t

    def start(self, model: bytes, bundle: bytes) -> VerifiedModel:
        verified = verify_model(model, bundle, self.trust, now=datetime.now(UTC))
        record_accepted(self.state, admit_release(verified, read_accepted(self.state), self.trust))
        return verified


def test_validly_signed_older_model_is_refused(
    test_ca: ProductCA, models: dict[str, bytes], tmp_path: Path
) -> None:
    gw, signer = Gateway(tmp_path, trust(test_ca)), test_ca.signer()
    gw.start(models["strict-2"], bundle(models["strict-2"], signer, release=2))
    before = gw.state.read_bytes()
    old = bundle(models["lax-1"], signer, release=1)
    with pytest.raises(ModelRollbackError, match="would replace release 2"):
        gw.start(models["lax-1"], old)
    assert gw.state.read_bytes() == before  # still at release 2, the strict model


def test_another_model_under_the_accepted_release_number_is_refused(
    test_ca: ProductCA, models: dict[str, bytes], tmp_path: Path
) -> None:
    gw, signer = Gateway(tmp_path, trust(test_ca)), test_ca.signer()
    gw.start(models["strict-2"], bundle(models["strict-2"], signer, release=2))
    with pytest.raises(ModelRollbackError):
        gw.start(models["lax-1"], bundle(models["lax-1"], signer, release=2))
    # The same model again (a restart) and a higher release are accepted.
    gw.start(models["strict-2"], bundle(models["strict-2"], signer, release=2))
    assert gw.start(models["next-3"], bundle(models["next-3"], signer, release=3)).release == 3


def test_model_signed_without_a_release_cannot_replace_an_accepted_one(
    test_ca: ProductCA, models: dict[str, bytes], tmp_path: Path
) -> None:
    gw, signer = Gateway(tmp_path, trust(test_ca)), test_ca.signer()
    gw.start(models["strict-2"], bundle(models["strict-2"], signer, release=2))
    with pytest.raises(ModelRollbackError, match="release 0"):
        gw.start(models["lax-1"], bundle(models["lax-1"], signer))  # a v1 bundle


def test_release_number_edited_in_the_bundle_is_refused_by_the_signature(
    test_ca: ProductCA, models: dict[str, bytes], tmp_path: Path
) -> None:
    gw, signer = Gateway(tmp_path, trust(test_ca)), test_ca.signer()
    doc = json.loads(bundle(models["lax-1"], signer, release=1))
    doc["release"] = 99
    with pytest.raises(ModelVerificationError, match="signature does not verify"):
        gw.start(models["lax-1"], json.dumps(doc).encode())
    rollback = json.loads(bundle(models["lax-1"], test_ca.signer("operations"), release=1))
    rollback["rollback_of"] = 5  # turning a plain release into a rollback
    with pytest.raises(ModelVerificationError, match="signature does not verify"):
        gw.start(models["lax-1"], json.dumps(rollback).encode())
    assert read_accepted(gw.state) is None


def test_rollback_signed_by_an_ordinary_model_signer_is_refused(
    test_ca: ProductCA, models: dict[str, bytes], tmp_path: Path
) -> None:
    gw, signer = Gateway(tmp_path, trust(test_ca)), test_ca.signer()
    gw.start(models["strict-2"], bundle(models["strict-2"], signer, release=2))
    with pytest.raises(ModelRollbackError, match="not in rollback_signers"):
        gw.start(models["lax-1"], bundle(models["lax-1"], signer, release=1, rollback_of=2))
    nobody = Gateway(tmp_path, trust(test_ca, rollback_signers=()))  # empty: no rollback at all
    operator = test_ca.signer("operations")
    with pytest.raises(ModelRollbackError, match="not in rollback_signers"):
        nobody.start(models["lax-1"], bundle(models["lax-1"], operator, release=1, rollback_of=2))
    assert read_accepted(gw.state) == AcceptedRelease(2, sha(models["strict-2"]), "strict-2")


def test_operator_signed_rollback_is_accepted_once_and_cannot_be_replayed(
    test_ca: ProductCA, models: dict[str, bytes], tmp_path: Path
) -> None:
    gw, signer, operator = (
        Gateway(tmp_path, trust(test_ca)),
        test_ca.signer(),
        test_ca.signer("operations"),
    )
    bad = bundle(models["strict-2"], signer, release=2)
    gw.start(models["strict-2"], bad)
    rollback = bundle(models["lax-1"], operator, release=1, rollback_of=2)
    assert gw.start(models["lax-1"], rollback).rollback_of == 2
    gw.start(models["lax-1"], rollback)  # a restart on the rollback
    rolled_back = AcceptedRelease(2, sha(models["lax-1"]), "lax-1", rollback=True)
    assert read_accepted(gw.state) == rolled_back
    with pytest.raises(ModelRollbackError):  # the release rolled back stays refused
        gw.start(models["strict-2"], bad)
    gw.start(models["next-3"], bundle(models["next-3"], signer, release=3))
    with pytest.raises(ModelRollbackError, match="stands at release 3"):
        gw.start(models["lax-1"], rollback)  # a rollback is not replayable once moved on


def test_damaged_release_state_refuses_every_model(
    test_ca: ProductCA, models: dict[str, bytes], tmp_path: Path
) -> None:
    gw = Gateway(tmp_path, trust(test_ca))
    gw.state.write_text('{"release": "2"}')
    with pytest.raises(ModelVerificationError, match="damaged"):
        gw.start(models["next-3"], bundle(models["next-3"], test_ca.signer(), release=3))


def test_gateway_refuses_to_start_on_an_older_model(test_ca: ProductCA, tmp_path: Path) -> None:
    """`idmz edge check` on a gateway that already ran release 2: its configured model (signed
    without a release) is refused, exit 1, and the check records nothing."""
    config = make_config(test_ca, tmp_path, broker_port=1, opcua=2, modbus=3, metrics=4)
    state = release_state_path(tmp_path / "model.onnx")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "idmz", "edge", "check", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert check().returncode == 0 and not state.exists()  # check does not record
    record_accepted(state, AcceptedRelease(2, "0" * 64, "strict-2"))
    refused = check()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "would replace release 2" in refused.stderr
    assert read_accepted(state) == AcceptedRelease(2, "0" * 64, "strict-2")
