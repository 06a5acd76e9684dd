"""`idmz ca` end to end: files, permissions, refusals, secrets never printed, offline root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.pki.cli import SECRET, audit_actions, idmz, issue, issued_count, openssl_csr
from tests.pki.conftest import DEVICE
from tests.support.net import wait_for


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
    code, out, err = issue(capsys, ready, csr, DEVICE.path, tmp_path / "c.pem")
    assert code == 3 and "wrong passphrase" in err
    assert "not-the-passphrase-31" not in out + err and SECRET not in out + err


def test_issue_accepts_an_openssl_csr_and_writes_leaf_and_chain(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, csr = openssl_csr(tmp_path)
    out_pem, chain_pem = tmp_path / "cert.pem", tmp_path / "chain.pem"
    code, out, _ = issue(
        capsys,
        ready,
        csr,
        DEVICE.path,
        out_pem,
        "--profile",
        "device",
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
    code, out, err = issue(capsys, ready, csr, DEVICE.path, tmp_path / "c.pem")
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
    code, _, err = issue(capsys, ready, csr, "acme/plant1/+/line1/cell2/x", tmp_path / "c.pem")
    assert code == 1 and "found '+'" in err


def test_validity_beyond_the_issuing_ca_is_refused_with_dates(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second CA whose issuing CA expires in 30 days: a 90-day device certificate cannot fit.
    other = tmp_path / "short"
    assert idmz(capsys, other, "ca", "init", "--issuing-days", "30")[0] == 0
    _, csr = openssl_csr(tmp_path)
    code, _, err = issue(capsys, other, csr, DEVICE.path, tmp_path / "c.pem")
    assert code == 1 and "outlive the issuing CA" in err
    code, out, _ = idmz(capsys, other, "ca", "status", "--json")
    assert code == 0 and json.loads(out)["warnings"], "status warns before the cliff"


def test_revoke_regenerates_the_crl_and_records_it(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, csr = openssl_csr(tmp_path)
    issue(capsys, ready, csr, DEVICE.path, tmp_path / "c.pem")
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


def test_crl_watch_republishes_a_crl_that_is_near_next_update(ready: Path) -> None:
    """`idmz ca crl --watch` (the systemd service) publishes at start, then again whenever less
    than half the CRL's lifetime is left, here a CRL another process published 23 h ago."""
    from datetime import UTC, datetime, timedelta

    from pki.local import LocalCA

    env = {**os.environ, "IDMZ_CA_PASSPHRASE": SECRET}
    crl_path = ready / "ca" / "crl.der"

    def crl() -> x509.CertificateRevocationList:
        return x509.load_der_x509_crl(crl_path.read_bytes())

    def number() -> int:
        return crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    def published() -> list[dict[str, Any]]:
        entries = (ready / "audit" / "entries.jsonl").read_text().splitlines()
        return [e for e in map(json.loads, entries) if e["action"] == "pki.crl.published"]

    first = number()
    proc = subprocess.Popen(
        [sys.executable, "-m", "idmz", "--home", str(ready), "ca", "crl", "--watch",
         "--interval", "0.3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: number() == first + 1, timeout_s=60, what="the CRL published at start")
        ca = LocalCA.open(ready / "ca", passphrase=SECRET.encode())
        near = ca.publish_crl(now=datetime.now(UTC) - timedelta(hours=23))
        ca.close()
        near_number = near.crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert near_number == first + 2
        assert near.next_update < datetime.now(UTC) + timedelta(hours=2)
        wait_for(lambda: number() == first + 3, timeout_s=60, what="the near-expiry CRL replaced")
        next_update = crl().next_update_utc
        assert next_update is not None and next_update > datetime.now(UTC) + timedelta(hours=23)
        wait_for(
            lambda: published()[-1]["resource"] == f"crl/{first + 3}",
            timeout_s=60,
            what="the republication audited",
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    records = published()
    assert records[-1]["details"] == {
        "crl_number": first + 3,
        "entries": 0,
        "next_update": next_update.isoformat(),
    }
    # The fresh CRL published at start was not republished on every round.
    assert [r["resource"] for r in records[-2:]] == [f"crl/{first + 1}", f"crl/{first + 3}"]


def test_a_ca_key_whose_mode_drifted_is_refused(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ready / "ca" / "issuing.key.pem").chmod(0o644)
    _, csr = openssl_csr(tmp_path)
    code, _, err = issue(capsys, ready, csr, DEVICE.path, tmp_path / "c.pem")
    assert code == 2 and "0600" in err and "0644" in err


def test_list_exports_csv_and_finds_certificates_about_to_expire(
    ready: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import csv
    import io

    _, csr = openssl_csr(tmp_path)
    issue(capsys, ready, csr, DEVICE.path, tmp_path / "short.pem", "--days", "5")
    issue(capsys, ready, csr, DEVICE.path, tmp_path / "long.pem")
    code, out, _ = idmz(capsys, ready, "ca", "list", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 2 and {r["status"] for r in rows} == {"valid"}
    code, out, _ = idmz(capsys, ready, "ca", "list", "--json", "--expiring", "30")
    short = x509.load_pem_x509_certificate((tmp_path / "short.pem").read_bytes())
    assert [r["serial"] for r in json.loads(out)] == [format(short.serial_number, "x")]


def test_ca_init_writes_an_audit_event_with_fingerprint_and_organization_never_the_passphrase(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = idmz(capsys, home, "ca", "init", "--organization", "acme")
    assert code == 0
    entries = [json.loads(line) for line in (home / "audit" / "entries.jsonl").open()]
    created = [e for e in entries if e["action"] == "pki.ca.created"]
    assert len(created) == 1 and created[0]["outcome"] == "success"
    details = created[0]["details"]
    assert details["organization"] == "acme"
    assert details["fingerprint"] in out  # the pin `ca init` printed
    secret = (home / "ca" / "passphrase").read_text().strip()
    assert secret not in (home / "audit" / "entries.jsonl").read_text()
