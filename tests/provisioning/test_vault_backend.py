"""The provisioning service issuing, renewing and revoking through a real OpenBao (issue 13).

Everything a gateway sees is the same as with the local CA: enrollment with the pinned root,
EST with curl and openssl alone, renewal over mutual TLS, and a revocation that is final: the
serial is in Vault's CRL, republished as ``<home>/ca/crl.pem``, and openssl refuses the
certificate against it. Vault sealed mid-enrollment: 503 with Retry-After, nothing half-issued,
the refusal audited, and the service resumes by itself once Vault is back.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.provisioning import test_est
from tests.provisioning.conftest import DEVICE, Env, csr_for, new_key, write_credentials
from tests.support.openbao import OpenBao

pytestmark = [pytest.mark.vault, pytest.mark.integration]


def openssl_verify(env: Env, cert: Path) -> subprocess.CompletedProcess[str]:
    paths = env.ca.paths
    return subprocess.run(
        [
            "openssl", "verify", "-crl_check", "-CAfile", str(paths.root_cert),
            "-untrusted", str(paths.issuing_cert), "-CRLfile", str(paths.crl_pem), str(cert),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_enroll_renew_and_revoke_through_vault(vault_env: Env, tmp_path: Path) -> None:
    env = vault_env
    creds = env.enrolled_device(tmp_path / "gw")
    cert = x509.load_pem_x509_certificate((creds / "cert.pem").read_bytes())
    assert (
        cert.issuer == env.services.enrollment.issuing.subject
    )  # Vault's issuing CA, not a local one
    assert env.fingerprint == env.ca.root_fingerprint
    assert openssl_verify(env, creds / "cert.pem").returncode == 0

    # Renewal over mutual TLS with the Vault-issued certificate.
    with env.client(cert=creds / "cert.pem", key=creds / "key.pem") as http:
        r = http.post("/v1/renew", json={"csr": csr_for(key := new_key()).decode()})
    assert r.status_code == 201, r.text
    write_credentials(tmp_path / "gw2", key, r.json())
    assert env.last_audit()["action"] == "provisioning.renew.accepted"

    # Revocation is final: every certificate of the device is in Vault's CRL and in crl.pem.
    notice = env.services.operators.revoke_device(DEVICE, operator="operator:test", now=env.now())
    assert len(notice.serials) == 2
    listed = subprocess.run(
        ["openssl", "crl", "-in", str(env.ca.paths.crl_pem), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout.replace(":", "")  # fmt: skip
    for serial in notice.serials:
        assert serial.upper() in listed
    refused = openssl_verify(env, tmp_path / "gw2" / "cert.pem")
    assert refused.returncode != 0 and "revoked" in refused.stdout + refused.stderr
    with env.client(cert=tmp_path / "gw2" / "cert.pem", key=tmp_path / "gw2" / "key.pem") as http:
        again = http.post("/v1/renew", json={"csr": csr_for(new_key()).decode()})
    assert again.status_code in (401, 403)


def test_est_with_curl_and_openssl_through_vault(vault_env: Env, tmp_path: Path) -> None:
    test_est.test_est_enrollment_and_reenrollment_with_curl_and_openssl(vault_env, tmp_path)


def test_vault_sealed_mid_enrollment_is_a_503_with_nothing_half_issued(
    vault_env: Env, openbao: OpenBao
) -> None:
    env = vault_env
    env.add_device()
    token = env.token()
    before = env.snapshot()
    openbao.seal()
    try:
        r = env.enroll(token=token)
        assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert env.snapshot() == before, "no registry row and no ledger row without Vault"
        record = env.last_audit()
        assert record["action"] == "provisioning.enroll.refused"
        assert record["outcome"] == "failure" and record["actor"] == DEVICE
        assert record["details"]["code"] == "upstream" and "sealed" in record["reason"]
    finally:
        openbao.unseal()
    # Vault is back: the same one-time token was never consumed, and enrollment resumes.
    assert env.enroll(token=token).status_code == 201
    assert env.last_audit()["action"] == "provisioning.enroll.accepted"


def test_serve_enroll_renew_revoke_with_the_cli_and_vault(
    tmp_path: Path, openbao: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``idmz provisioning serve --ca vault`` reaches Vault only through the environment the
    README names, with the AppRole secret_id in a 0600 file."""
    from tests.provisioning.test_cli_service import idmz, serving

    secret = tmp_path / "secret-id"
    secret.write_text(openbao.new_secret_id())
    secret.chmod(0o600)
    for name, value in {**openbao.env(), "VAULT_SECRET_ID_FILE": str(secret)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VAULT_PKI_SERVER_ROLE", "idmz-server")
    home, gw = tmp_path / "home", tmp_path / "gw"
    vault = ("--ca", "vault")
    with serving(home, *vault) as url:
        # The home records its backend: later commands need no --ca, and cannot mix in a local CA.
        fingerprint = idmz(home, "provisioning", "fingerprint").stdout.strip()
        assert fingerprint == openbao_root_fingerprint(home)
        mixed = idmz(home, "provisioning", "fingerprint", "--ca", "local", check=False)
        assert mixed.returncode != 0 and "uses the vault CA backend" in mixed.stderr
        idmz(home, "provisioning", "device", "add", DEVICE)
        token = idmz(
            home, "provisioning", "token", "create", "--device", DEVICE, "--ttl", "15m"
        ).stdout.splitlines()[-1]
        idmz(home, "enroll", "--server", url, "--token", token, "--ca-fingerprint", fingerprint,
             "--out", gw)  # fmt: skip
        idmz(home, "renew", "--out", gw, "--force")
        revoked = idmz(home, "provisioning", "revoke", DEVICE, "--reason", "key-compromise")
        assert "2 certificate(s)" in revoked.stdout
        refused = idmz(home, "renew", "--out", gw, "--force", check=False)
        assert refused.returncode == 1 and "403" in refused.stderr
    crl = x509.load_pem_x509_crl(openbao.crl_pem())
    cert = x509.load_pem_x509_certificate((gw / "cert.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def openbao_root_fingerprint(home: Path) -> str:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    root = x509.load_pem_x509_certificate((home / "ca" / "root.pem").read_bytes())
    return hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_vault_down_is_a_503_with_nothing_issued_and_the_failure_audited(tmp_path: Path) -> None:
    """A Vault that is gone (its own server here, stopped) is an upstream failure, not a crash."""
    from pki.vault import VaultCA
    from tests.provisioning.conftest import serving
    from tests.support.openbao import bao_binary, start_openbao

    binary = bao_binary()
    assert binary is not None
    bao = start_openbao(tmp_path / "openbao", binary)
    try:
        ca = VaultCA.connect(bao.config(timeout_s=5.0), ca_dir=tmp_path / "ca")
        for env in serving(tmp_path, f"sqlite:///{tmp_path / 'registry.sqlite'}", ca=ca):
            env.add_device()
            token = env.token()
            before = env.snapshot()
            bao.stop()
            r = env.enroll(token=token)
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert env.snapshot() == before
            record = env.last_audit()
            assert record["action"] == "provisioning.enroll.refused"
            assert record["details"]["code"] == "upstream"
            assert "cannot reach Vault" in record["reason"]
    finally:
        bao.stop()
