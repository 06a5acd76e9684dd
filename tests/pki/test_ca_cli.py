"""`idmz ca` end to end: files, permissions, refusals, secrets never printed, offline root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idmz.cli import main
from tests.pki.conftest import DEVICE
from tests.support.net import wait_for

SECRET = "cli-passphrase-77e0b2"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("IDMZ_HOME", "IDMZ_CA_PASSPHRASE", "IDMZ_CA_PASSPHRASE_FILE", "VAULT_ADDR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


def idmz(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def openssl_csr(
    tmp_path: Path,
    name: str = "dev",
    newkey: tuple[str, ...] = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
) -> tuple[Path, Path]:
    key, csr = tmp_path / f"{name}.key", tmp_path / f"{name}.csr"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            *newkey,
            "-nodes",
            "-keyout",
            str(key),
            "-subj",
            "/CN=press-07",
            "-out",
            str(csr),
        ],
        check=True,
        capture_output=True,
    )
    return key, csr


@pytest.fixture
def ready(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", SECRET)
    assert idmz(capsys, home, "ca", "init", "--organization", "acme")[0] == 0
    return home


def issued_count(capsys: pytest.CaptureFixture[str], home: Path) -> int:
    code, out, _ = idmz(capsys, home, "ca", "list", "--json")
    assert code == 0
    return len(json.loads(out))


def audit_actions(home: Path) -> list[tuple[str, str]]:
    path = home / "audit" / "entries.jsonl"
    if not path.exists():
        return []
    return [(e["action"], e["outcome"]) for e in map(json.loads, path.read_text().splitlines())]


def test_init_without_a_passphrase_generates_one_0600_and_says_where(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = idmz(capsys, home, "ca", "init")
    assert code == 0
    secret_file = home / "ca" / "passphrase"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert str(secret_file) in err
    assert secret_file.read_text().strip() not in out + err
    # Later commands find it without any environment.
    assert idmz(capsys, home, "ca", "status")[0] == 0


def test_ca_private_keys_are_encrypted_at_rest_and_owner_only(ready: Path) -> None:
    for name in ("root.key.pem", "issuing.key.pem"):
        path = ready / "ca" / name
        assert path.stat().st_mode & 0o777 == 0o600
        data = path.read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError):
            serialization.load_pem_private_key(data, password=None)
        serialization.load_pem_private_key(data, password=SECRET.encode())
    assert (ready / "ca").stat().st_mode & 0o777 == 0o700


def test_passphrase_file_readable_by_others_is_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loose = tmp_path / "pass"
    loose.write_text(SECRET)
    loose.chmod(0o644)
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE_FILE", str(loose))
    code, out, err = idmz(capsys, home, "ca", "init")
    assert code == 2 and "0600" in err and SECRET not in out + err
    assert not (home / "ca" / "root.pem").exists()


def test_wrong_passphrase_is_a_clear_error_that_does_not_echo_it(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDMZ_CA_PASSPHRASE", "not-the-passphrase-31")
    _, csr = openssl_csr(tmp_path)
    code, out, err = idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--out",
        str(tmp_path / "c.pem"),
    )
    assert code == 3 and "wrong passphrase" in err
    assert "not-the-passphrase-31" not in out + err and SECRET not in out + err


def test_issue_accepts_an_openssl_csr_and_writes_leaf_and_chain(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, csr = openssl_csr(tmp_path)
    out_pem, chain_pem = tmp_path / "cert.pem", tmp_path / "chain.pem"
    code, out, _ = idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--profile",
        "device",
        "--out",
        str(out_pem),
        "--chain-out",
        str(chain_pem),
    )
    assert code == 0 and DEVICE.path in out
    cert = x509.load_pem_x509_certificate(out_pem.read_bytes())
    chain = x509.load_pem_x509_certificates(chain_pem.read_bytes())
    assert [c.subject for c in chain] == [
        x509.load_pem_x509_certificate((ready / "ca" / "issuing.pem").read_bytes()).subject
    ]
    assert format(cert.serial_number, "x") in out
    assert ("pki.cert.issued", "success") in audit_actions(ready)


def test_refused_issue_exits_1_names_the_problem_issues_nothing_and_leaks_nothing(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, csr = openssl_csr(tmp_path, "weak", ("-newkey", "rsa:1024"))
    code, out, err = idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--out",
        str(tmp_path / "c.pem"),
    )
    assert code == 1
    assert "at least 2048" in err and "1024" in err
    assert not (tmp_path / "c.pem").exists()
    assert issued_count(capsys, ready) == 0
    for secret in (
        SECRET,
        key.read_text().splitlines()[1],
        (ready / "ca" / "issuing.key.pem").read_text().splitlines()[1],
    ):
        assert secret not in out + err
    assert ("pki.cert.issued", "denied") in audit_actions(ready)
    assert SECRET not in (ready / "audit" / "entries.jsonl").read_text()


def test_init_refuses_to_overwrite_an_existing_ca(
    ready: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (ready / "ca" / "root.pem").read_bytes()
    code, _, err = idmz(capsys, ready, "ca", "init")
    assert code == 2 and "refusing to overwrite" in err
    assert (ready / "ca" / "root.pem").read_bytes() == before


def test_identity_that_is_not_a_device_path_is_refused(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, csr = openssl_csr(tmp_path)
    code, _, err = idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        "acme/plant1/+/line1/cell2/x",
        "--out",
        str(tmp_path / "c.pem"),
    )
    assert code == 1 and "found '+'" in err


def test_validity_beyond_the_issuing_ca_is_refused_with_dates(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second CA whose issuing CA expires in 30 days: a 90-day device certificate cannot fit.
    other = tmp_path / "short"
    assert idmz(capsys, other, "ca", "init", "--issuing-days", "30")[0] == 0
    _, csr = openssl_csr(tmp_path)
    code, _, err = idmz(
        capsys,
        other,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--out",
        str(tmp_path / "c.pem"),
    )
    assert code == 1 and "outlive the issuing CA" in err
    code, out, _ = idmz(capsys, other, "ca", "status", "--json")
    assert code == 0 and json.loads(out)["warnings"], "status warns before the cliff"


def test_revoke_regenerates_the_crl_and_records_it(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, csr = openssl_csr(tmp_path)
    idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--out",
        str(tmp_path / "c.pem"),
    )
    serial = x509.load_pem_x509_certificate((tmp_path / "c.pem").read_bytes()).serial_number
    colon = ":".join(f"{b:02x}" for b in serial.to_bytes((serial.bit_length() + 7) // 8, "big"))
    code, out, _ = idmz(capsys, ready, "ca", "revoke", colon, "--reason", "key-compromise")
    assert code == 0 and "revoked" in out
    crl = x509.load_der_x509_crl((ready / "ca" / "crl.der").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    assert ("pki.cert.revoked", "success") in audit_actions(ready)
    rows = json.loads(idmz(capsys, ready, "ca", "list", "--json", "--revoked")[1])
    assert [r["reason"] for r in rows] == ["key-compromise"]


def test_revoking_an_unknown_or_malformed_serial_is_refused(
    ready: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = idmz(capsys, ready, "ca", "revoke", "abc123")
    assert code == 1 and "abc123" in err
    code, _, err = idmz(capsys, ready, "ca", "revoke", "not-hex")
    assert code == 2 and "hex serial" in err


def test_fingerprint_is_the_sha256_openssl_computes(
    ready: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = idmz(capsys, ready, "ca", "fingerprint")
    theirs = subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(ready / "ca" / "root.pem"),
            "-noout",
            "-fingerprint",
            "-sha256",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert code == 0
    assert out.strip() == theirs.split("=", 1)[1].strip().replace(":", "").lower()


def test_status_and_crl_commands(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, _ = idmz(capsys, ready, "ca", "crl", "--out-dir", str(tmp_path / "pub"))
    assert (
        code == 0
        and (tmp_path / "pub" / "crl.pem").exists()
        and (tmp_path / "pub" / "crl.der").exists()
    )
    report = json.loads(idmz(capsys, ready, "ca", "status", "--json")[1])
    assert report["certificates"] == {"issued": 0, "revoked": 0, "active": 0}
    assert report["crl"]["number"] >= 2 and report["warnings"] == []
    assert ("pki.crl.published", "success") in audit_actions(ready)


def test_crl_watch_regenerates_on_schedule(ready: Path) -> None:
    env = {**os.environ, "IDMZ_CA_PASSPHRASE": SECRET}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idmz",
            "--home",
            str(ready),
            "ca",
            "crl",
            "--watch",
            "--interval",
            "0.3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    crl_path = ready / "ca" / "crl.der"

    def number() -> int:
        crl = x509.load_der_x509_crl(crl_path.read_bytes())
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    first = number()
    try:
        wait_for(lambda: number() >= first + 3, timeout_s=60, what="three scheduled CRLs")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


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
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.vault_server import FakeVault, VaultTestServer, idmz_roles

    fake = FakeVault()
    idmz_roles(fake)
    with VaultTestServer(fake) as server:
        monkeypatch.setenv("VAULT_ADDR", server.url)
        monkeypatch.setenv("VAULT_ROLE_ID", fake.role_id)
        monkeypatch.setenv("VAULT_SECRET_ID", fake.secret_id)
        _, csr = openssl_csr(tmp_path)
        code, out, err = idmz(
            capsys,
            home,
            "ca",
            "issue",
            "--backend",
            "vault",
            "--csr",
            str(csr),
            "--identity",
            DEVICE.path,
            "--out",
            str(tmp_path / "v.pem"),
        )
        assert code == 0, err
        assert fake.secret_id not in out + err
        serial = x509.load_pem_x509_certificate((tmp_path / "v.pem").read_bytes()).serial_number
        assert serial in fake.issued
        code, out, _ = idmz(capsys, home, "ca", "revoke", "--backend", "vault", format(serial, "x"))
        assert code == 0 and fake.issued[serial].revoked_at is not None
        code, out, _ = idmz(capsys, home, "ca", "fingerprint", "--backend", "vault")
        assert code == 0 and len(out.strip()) == 64


def test_a_ca_key_whose_mode_drifted_is_refused(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ready / "ca" / "issuing.key.pem").chmod(0o644)
    _, csr = openssl_csr(tmp_path)
    code, _, err = idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--out",
        str(tmp_path / "c.pem"),
    )
    assert code == 2 and "0600" in err and "0644" in err


def test_vault_settings_from_toml_with_a_secret_file(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.vault_server import FakeVault, VaultTestServer, idmz_roles

    for var in (
        "VAULT_ROLE_ID",
        "VAULT_SECRET_ID",
        "VAULT_SECRET_ID_FILE",
        "VAULT_PKI_MOUNT",
        "VAULT_PKI_ROLE",
    ):
        monkeypatch.delenv(var, raising=False)
    fake = FakeVault()
    idmz_roles(fake)
    secret = tmp_path / "secret-id"
    secret.write_text(fake.secret_id)
    secret.chmod(0o600)
    with VaultTestServer(fake) as server:
        (home / "ca").mkdir(parents=True)
        (home / "ca" / "vault.toml").write_text(
            f'url = "{server.url}"\nrole_id = "{fake.role_id}"\nsecret_id_file = "{secret}"\n'
            'mount = "pki"\nrole = "idmz-device"\n[roles]\nserver = "idmz-server"\n'
        )
        _, csr = openssl_csr(tmp_path)
        code, _, err = idmz(
            capsys,
            home,
            "ca",
            "issue",
            "--backend",
            "vault",
            "--profile",
            "server",
            "--csr",
            str(csr),
            "--identity",
            "relay.plant1.example,127.0.0.1",
            "--out",
            str(tmp_path / "s.pem"),
        )
        assert code == 0, err
        code, out, err = idmz(capsys, home, "ca", "status", "--backend", "vault", "--json")
        assert code == 0, err
        assert json.loads(out)["crl"]["entries"] == 0


def test_list_exports_csv_and_finds_certificates_about_to_expire(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv
    import io

    _, csr = openssl_csr(tmp_path)
    idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--days",
        "5",
        "--out",
        str(tmp_path / "short.pem"),
    )
    idmz(
        capsys,
        ready,
        "ca",
        "issue",
        "--csr",
        str(csr),
        "--identity",
        DEVICE.path,
        "--out",
        str(tmp_path / "long.pem"),
    )
    code, out, _ = idmz(capsys, ready, "ca", "list", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2 and {r["status"] for r in rows} == {"valid"}
    code, out, _ = idmz(capsys, ready, "ca", "list", "--json", "--expiring", "30")
    short = x509.load_pem_x509_certificate((tmp_path / "short.pem").read_bytes())
    assert [r["serial"] for r in json.loads(out)] == [format(short.serial_number, "x")]
