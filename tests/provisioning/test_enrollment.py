"""Online enrollment with `idmz enroll`, renewal, revocation: the path the demo takes."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from tests.provisioning.conftest import DEVICE, Env

IDMZ = [sys.executable, "-m", "idmz"]


def idmz(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*IDMZ, *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def enroll(
    env: Env,
    out: Path,
    *,
    token: str | None = None,
    fingerprint: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`idmz enroll` against the test service (a fresh token and the right root by default)."""
    return idmz(
        "enroll", "--server", env.url, "--token", token if token is not None else env.token(),
        "--ca-fingerprint", fingerprint or env.fingerprint, "--out", out, check=check,
    )  # fmt: skip


def cli_enroll(env: Env, out: Path) -> Path:
    env.add_device()
    enroll(env, out)
    return out


def test_idmz_enroll_writes_the_credential_directory_of_the_contract(
    env: Env, tmp_path: Path
) -> None:
    env.add_device()
    out = tmp_path / "gw"
    enroll(env, out)
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert (out / "identity").read_text().strip() == DEVICE
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{DEVICE}"]
    assert (out / "ca.pem").read_bytes() == env.root_pem
    subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            out / "ca.pem",
            "-untrusted",
            out / "chain.pem",
            out / "cert.pem",
        ],
        check=True,
        capture_output=True,
    )
    assert env.registry.device(DEVICE).status == "enrolled"  # type: ignore[union-attr]
    record = env.last_audit()
    assert record["action"] == "provisioning.enroll.accepted" and record["actor"] == DEVICE
    assert record["resource"] == format(cert.serial_number, "x")
    # What the audit report's certificate lifecycle table shows (subject, profile, expiry).
    assert record["details"]["identity"] == DEVICE and record["details"]["profile"] == "device"
    assert record["details"]["not_after"] == cert.not_valid_after_utc.isoformat()


def test_enroll_reads_the_token_from_a_file_so_it_stays_out_of_the_process_list(
    env: Env, tmp_path: Path
) -> None:
    env.add_device()
    (token_file := tmp_path / "token").write_text(env.token() + "\n")
    idmz(
        "enroll",
        "--server",
        env.url,
        "--token-file",
        token_file,
        "--ca-fingerprint",
        env.fingerprint,
        "--out",
        tmp_path / "gw",
    )
    assert (tmp_path / "gw" / "cert.pem").exists()


def test_enroll_refuses_a_server_whose_root_does_not_match_the_pin(
    env: Env, tmp_path: Path
) -> None:
    env.add_device()
    token = env.token()
    before = env.snapshot()
    wrong = "ab" * 32
    result = enroll(env, tmp_path / "gw", token=token, fingerprint=wrong, check=False)
    assert result.returncode == 1 and "refusing to trust it" in result.stderr
    assert not (tmp_path / "gw" / "key.pem").exists()
    assert env.snapshot() == before  # the token was never sent


def test_renew_over_mutual_tls_replaces_key_and_certificate(env: Env, tmp_path: Path) -> None:
    env.add_device()
    out = tmp_path / "gw"
    enroll(env, out)
    old_cert, old_key = (out / "cert.pem").read_bytes(), (out / "key.pem").read_bytes()
    not_due = idmz("renew", "--out", out)
    assert "not due" in not_due.stdout and (out / "cert.pem").read_bytes() == old_cert
    idmz("renew", "--out", out, "--force")
    assert (out / "cert.pem").read_bytes() != old_cert and (out / "key.pem").read_bytes() != old_key
    new = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    old = x509.load_pem_x509_certificate(old_cert)
    assert env.registry.certificate(format(old.serial_number, "x")).status == "superseded"  # type: ignore[union-attr]
    assert env.registry.certificate(format(new.serial_number, "x")).status == "active"  # type: ignore[union-attr]
    renewed = env.last_audit()
    assert renewed["action"] == "provisioning.renew.accepted"
    assert renewed["details"]["identity"] == DEVICE and renewed["details"]["profile"] == "device"
    assert renewed["details"]["not_after"] == new.not_valid_after_utc.isoformat()


def test_superseded_certificate_cannot_renew_again(env: Env, tmp_path: Path) -> None:
    env.add_device()
    out = tmp_path / "gw"
    enroll(env, out)
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    for name in ("cert.pem", "key.pem", "chain.pem", "ca.pem", "identity", "server"):
        (stolen / name).write_bytes((out / name).read_bytes())
    idmz("renew", "--out", out, "--force")
    before = env.snapshot()
    result = idmz("renew", "--out", stolen, "--force", check=False)
    assert result.returncode == 1
    assert env.snapshot() == before
    assert env.last_audit()["details"]["code"] == "certificate-not-current"


def test_revoke_cuts_the_device_off_and_publishes_the_crl(env: Env, tmp_path: Path) -> None:
    env.add_device()
    out = tmp_path / "gw"
    enroll(env, out)
    crl_before = env.ca.paths.crl_der.read_bytes()
    notice = env.services.operators.revoke_device(DEVICE, operator="operator:test", now=env.now())
    assert env.ca.paths.crl_der.read_bytes() != crl_before
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    crl = x509.load_der_x509_crl(env.ca.paths.crl_der.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert notice.serials == (format(cert.serial_number, "x"),)
    assert env.last_audit()["action"] == "provisioning.device.revoked"
    check = subprocess.run(
        [
            "openssl",
            "verify",
            "-crl_check",
            "-CAfile",
            out / "ca.pem",
            "-untrusted",
            out / "chain.pem",
            "-CRLfile",
            env.ca.paths.crl_pem,
            out / "cert.pem",
        ],
        capture_output=True,
        text=True,
    )
    assert check.returncode != 0 and "revoked" in (check.stdout + check.stderr)


def test_renew_daemon_renews_when_due_and_stops_on_sigterm(env: Env, tmp_path: Path) -> None:
    import signal
    import time

    out = cli_enroll(env, tmp_path / "gw")
    first = (out / "cert.pem").read_bytes()
    # A tiny fraction makes the certificate due at once; the daemon renews and keeps watching.
    daemon = subprocess.Popen(
        [*IDMZ, "renew", "--out", str(out), "--daemon", "--fraction", "0.0000001"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (out / "cert.pem").read_bytes() == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / "cert.pem").read_bytes() != first, "the daemon did not renew"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    assert code == 0
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert env.registry.certificate(format(cert.serial_number, "x")) is not None


def test_group_token_enrolls_one_new_device_under_its_prefix(env: Env, tmp_path: Path) -> None:
    env.services.operators.add_group(
        "acme/plant1/press/line1", operator="t", now=env.now(), validity_days=30
    )
    token, _ = env.services.operators.create_enrollment_token(
        operator="t", now=env.now(), group="acme/plant1/press/line1"
    )
    outside = idmz(
        "enroll",
        "--server",
        env.url,
        "--token",
        token,
        "--ca-fingerprint",
        env.fingerprint,
        "--identity",
        "acme/plant1/paint/line1/cell1/robot-1",
        "--out",
        tmp_path / "x",
        check=False,
    )
    assert outside.returncode == 1
    assert env.last_audit()["details"]["code"] == "other-device"
    idmz(
        "enroll",
        "--server",
        env.url,
        "--token",
        token,
        "--ca-fingerprint",
        env.fingerprint,
        "--identity",
        "acme/plant1/press/line1/cell9/new-gw",
        "--out",
        tmp_path / "gw",
    )
    existing = "acme/plant1/press/line1/cell2/press-07"
    env.add_device(existing)
    token2, _ = env.services.operators.create_enrollment_token(
        operator="t", now=env.now(), group="acme/plant1/press/line1"
    )
    before = env.snapshot()
    hijack = idmz(
        "enroll",
        "--server",
        env.url,
        "--token",
        token2,
        "--ca-fingerprint",
        env.fingerprint,
        "--identity",
        existing,
        "--out",
        tmp_path / "y",
        check=False,
    )
    assert hijack.returncode == 1 and env.snapshot() == before
    assert env.last_audit()["details"]["code"] == "device-exists"
    device = env.registry.device("acme/plant1/press/line1/cell9/new-gw")
    assert device is not None and device.status == "enrolled"
    cert = x509.load_pem_x509_certificate((tmp_path / "gw" / "cert.pem").read_bytes())
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 29 < lifetime.days <= 30


def test_re_enrollment_makes_the_old_certificate_unable_to_renew(env: Env, tmp_path: Path) -> None:
    old = cli_enroll(env, tmp_path / "old")
    enroll(env, tmp_path / "new")  # replacement hardware, same identity
    statuses = sorted(c.status for c in env.registry.certificates(DEVICE))
    assert statuses == ["active", "superseded"]
    refused = idmz("renew", "--out", old, "--force", check=False)
    assert refused.returncode == 1
    assert env.last_audit()["details"]["code"] == "certificate-not-current"
    idmz("renew", "--out", tmp_path / "new", "--force")
