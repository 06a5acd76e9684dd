"""`idmz ca` across hosts and backends: the offline-root procedure, and the Vault backend."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.pki.cli import SECRET, idmz, openssl_csr
from tests.pki.conftest import DEVICE
from tests.support.openbao import MOUNT, SERVER_ROLE, OpenBao


def test_offline_root_flow_end_to_end(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", SECRET)
    root_home, online = tmp_path / "root-host", tmp_path / "online-host"
    assert idmz(capsys, root_home, "ca", "init", "--root-only", "--organization", "acme")[0] == 0
    assert not (root_home / "ca" / "issuing.pem").exists()
    req = tmp_path / "issuing.csr.pem"
    assert (
        idmz(
            capsys,
            online,
            "ca",
            "intermediate-request",
            "--organization",
            "acme",
            "--out",
            str(req),
        )[0]
        == 0
    )
    signed = tmp_path / "issuing.pem"
    assert (
        idmz(
            capsys,
            root_home,
            "ca",
            "sign-intermediate",
            "--csr",
            str(req),
            "--out",
            str(signed),
            "--days",
            "365",
        )[0]
        == 0
    )
    code, _out, _ = idmz(
        capsys,
        online,
        "ca",
        "install-intermediate",
        "--cert",
        str(signed),
        "--root",
        str(root_home / "ca" / "root.pem"),
    )
    assert code == 0
    assert not (online / "ca" / "root.key.pem").exists(), (
        "the root key never reaches the online host"
    )
    assert (
        idmz(capsys, online, "ca", "fingerprint")[1]
        == idmz(capsys, root_home, "ca", "fingerprint")[1]
    )
    _, csr = openssl_csr(tmp_path)
    cert = tmp_path / "dev.pem"
    assert (
        idmz(
            capsys,
            online,
            "ca",
            "issue",
            "--csr",
            str(csr),
            "--identity",
            DEVICE.path,
            "--out",
            str(cert),
        )[0]
        == 0
    )
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-crl_check",
            "-CAfile",
            str(online / "ca" / "root.pem"),
            "-untrusted",
            str(online / "ca" / "issuing.pem"),
            "-CRLfile",
            str(online / "ca" / "crl.pem"),
            str(cert),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sign_intermediate_outliving_the_root_is_refused(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", SECRET)
    root_home, online = tmp_path / "r", tmp_path / "o"
    idmz(capsys, root_home, "ca", "init", "--root-only", "--root-days", "100")
    req = tmp_path / "req.pem"
    idmz(capsys, online, "ca", "intermediate-request", "--out", str(req))
    code, _, err = idmz(
        capsys,
        root_home,
        "ca",
        "sign-intermediate",
        "--csr",
        str(req),
        "--out",
        str(tmp_path / "i.pem"),
        "--days",
        "365",
    )
    assert code == 1 and "outlive the root" in err
    assert not (tmp_path / "i.pem").exists()


def test_install_intermediate_from_another_root_is_refused(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", SECRET)
    r1, r2, online = tmp_path / "r1", tmp_path / "r2", tmp_path / "o"
    idmz(capsys, r1, "ca", "init", "--root-only")
    idmz(capsys, r2, "ca", "init", "--root-only")
    req = tmp_path / "req.pem"
    idmz(capsys, online, "ca", "intermediate-request", "--out", str(req))
    idmz(capsys, r1, "ca", "sign-intermediate", "--csr", str(req), "--out", str(tmp_path / "i.pem"))
    code, _, err = idmz(
        capsys,
        online,
        "ca",
        "install-intermediate",
        "--cert",
        str(tmp_path / "i.pem"),
        "--root",
        str(r2 / "ca" / "root.pem"),
    )
    assert code == 2 and "not signed by the given root" in err
    assert not (online / "ca" / "issuing.pem").exists()


def test_issue_through_the_vault_backend(
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    openbao: OpenBao,
) -> None:
    for name, value in openbao.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VAULT_SECRET_ID", openbao.secret_id)
    _, csr = openssl_csr(tmp_path)
    code, out, err = idmz(
        capsys, home, "ca", "issue", "--backend", "vault", "--csr", str(csr),
        "--identity", DEVICE.path, "--out", str(tmp_path / "v.pem"),
    )  # fmt: skip
    assert code == 0, err
    assert openbao.secret_id not in out + err
    serial = x509.load_pem_x509_certificate((tmp_path / "v.pem").read_bytes()).serial_number
    code, out, _ = idmz(capsys, home, "ca", "revoke", "--backend", "vault", format(serial, "x"))
    assert code == 0
    crl = x509.load_pem_x509_crl(openbao.crl_pem())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    published = x509.load_pem_x509_crl((home / "ca" / "crl.pem").read_bytes())
    assert published.get_revoked_certificate_by_serial_number(serial) is not None
    code, out, _ = idmz(capsys, home, "ca", "fingerprint", "--backend", "vault")
    assert code == 0 and len(out.strip()) == 64


def test_vault_settings_from_toml_with_a_secret_file(
    tmp_path: Path,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    openbao: OpenBao,
) -> None:
    for var in (
        "VAULT_ADDR",
        "VAULT_ROLE_ID",
        "VAULT_SECRET_ID",
        "VAULT_SECRET_ID_FILE",
        "VAULT_PKI_MOUNT",
        "VAULT_PKI_ROLE",
        "VAULT_PKI_SERVER_ROLE",
    ):
        monkeypatch.delenv(var, raising=False)
    secret = tmp_path / "secret-id"
    secret.write_text(openbao.new_secret_id())
    secret.chmod(0o600)
    (home / "ca").mkdir(parents=True)
    (home / "ca" / "vault.toml").write_text(
        f'url = "{openbao.url}"\nrole_id = "{openbao.role_id}"\nsecret_id_file = "{secret}"\n'
        f'mount = "{MOUNT}"\nrole = "idmz-device"\n[roles]\nserver = "{SERVER_ROLE}"\n'
    )
    _, csr = openssl_csr(tmp_path)
    code, _, err = idmz(
        capsys, home, "ca", "issue", "--backend", "vault", "--profile", "server",
        "--csr", str(csr), "--identity", "relay.plant1.example,127.0.0.1",
        "--out", str(tmp_path / "s.pem"),
    )  # fmt: skip
    assert code == 0, err
    code, out, err = idmz(capsys, home, "ca", "status", "--backend", "vault", "--json")
    assert code == 0, err
    revoked = x509.load_pem_x509_crl(openbao.crl_pem())
    assert json.loads(out)["crl"]["entries"] == len(list(revoked))
    secret.chmod(0o644)  # a secret file others can read is refused, and its path named
    code, _, err = idmz(capsys, home, "ca", "status", "--backend", "vault", "--json")
    assert code != 0 and "0600" in err and str(secret) in err
