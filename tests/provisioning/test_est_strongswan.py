"""EST with a second, independent client and TLS stack: strongSwan's ``pki --estca``/``--est``
(Debian ``strongswan-pki`` and, for its HTTP transport, ``libstrongswan-extra-plugins``; both in
``scripts/bootstrap``), with the local CA and with Vault (issue 13).

What failed before, and why:

* ``pki --estca`` said "could not parse single CA certificate": our ``cacerts`` answer was base64
  in 64-column lines, and strongSwan decodes base64 without skipping line breaks. RFC 8951
  section 3.1 (which updates RFC 7030) makes EST's base64 RFC 4648 section 4, without line
  breaks: the answer was at fault; it is now one line.
* ``pki --est --userpass est:<token>`` got 401: strongSwan formats the ``Authorization: Basic``
  header into a 256-byte buffer, and an enrollment token (an EdDSA JWT, ~380 characters) does not
  fit: the header is cut and its base64 no longer decodes (audited as ``malformed``). That is
  the client's limit; every enrollment token now also has a short EST password (``idmz
  provisioning token create --est-password``: the token id and a 128-bit MAC, same single use,
  ADR 0043), which fits. The 401 challenges with ``Basic`` as RFC 7030 section 3.2.3 clients
  expect.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.provisioning.conftest import DEVICE, Env
from tests.provisioning.test_est import run

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("pki") is None, reason="strongswan-pki is not installed"),
]


def strongswan(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pki", *map(str, argv)], capture_output=True, text=True, timeout=120, check=False
    )


def est_round_trip(env: Env, tmp_path: Path) -> None:
    # 4.1 cacerts with strongSwan: the chain it writes must end at the root the gateway pins.
    got = strongswan(
        "--estca", "--url", env.url, "--cacert", env.root_file,
        "--caout", tmp_path / "ca.crt", "--outform", "pem",
    )  # fmt: skip
    assert got.returncode == 0, got.stderr[-2000:]
    written = sorted(tmp_path.glob("ca*.crt"))
    certs = [x509.load_pem_x509_certificate(p.read_bytes()) for p in written]
    fingerprints = {
        hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in certs
    }
    assert env.fingerprint in fingerprints
    assert env.services.enrollment.issuing.subject in {c.subject for c in certs}

    # 4.2.1 simpleenroll with strongSwan, HTTP Basic: the token's short EST password (a JWT
    # does not fit strongSwan's 256-byte header buffer).
    env.add_device()
    _, claims = env.services.operators.create_enrollment_token(
        operator="operator:test", now=env.now(), device=DEVICE, ttl_s=900
    )
    password = env.token_key.est_password(claims.token_id)
    key = tmp_path / "device.key"
    key.write_bytes(run("pki", "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"))
    first = tmp_path / "device.req"
    first.write_bytes(
        run("pki", "--req", "--in", key, "--type", "priv", "--dn", "CN=est", "--outform", "der")
    )
    cacerts = [arg for p in written for arg in ("--cacert", str(p))]
    enrolled = strongswan(
        "--est", "--url", env.url, *cacerts, "--in", first,
        "--userpass", f"est:{password}", "--outform", "pem",
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr[-2000:]
    old = tmp_path / "old.pem"
    old.write_text(enrolled.stdout)
    assert env.last_audit()["action"] == "provisioning.enroll.accepted"
    assert env.registry.token(claims.token_id).used_at is not None  # type: ignore[union-attr]
    replay = strongswan(
        "--est", "--url", env.url, *cacerts, "--in", first,
        "--userpass", f"est:{password}", "--outform", "pem",
    )  # fmt: skip
    assert replay.returncode != 0 and "401" in replay.stderr

    # 4.2.2 simplereenroll with strongSwan: its own TLS stack, the old certificate and key.
    key2 = tmp_path / "new.key"
    key2.write_bytes(run("pki", "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem"))
    request = tmp_path / "new.req"
    request.write_bytes(
        run("pki", "--req", "--in", key2, "--type", "priv", "--dn", "CN=est", "--outform", "der")
    )
    renewed = strongswan(
        "--est", "--url", env.url, *cacerts, "--in", request,
        "--cert", old, "--key", key, "--outform", "pem",
    )  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr[-2000:]
    cert = x509.load_pem_x509_certificate(renewed.stdout.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{DEVICE}"]
    assert cert.serial_number != x509.load_pem_x509_certificate(old.read_bytes()).serial_number
    record = env.last_audit()
    assert record["action"] == "provisioning.renew.accepted"
    assert record["details"]["via"] == "est-reenroll"


def test_strongswan_reads_cacerts_and_reenrolls_with_the_local_ca(env: Env, tmp_path: Path) -> None:
    est_round_trip(env, tmp_path)


@pytest.mark.vault
def test_strongswan_reads_cacerts_and_reenrolls_through_vault(
    vault_env: Env, tmp_path: Path
) -> None:
    est_round_trip(vault_env, tmp_path)


def est_basic_enroll(env: Env, password: str) -> httpx.Response:
    """simpleenroll with HTTP Basic ``est:<password>`` and a fresh base64 DER CSR."""
    from tests.provisioning.conftest import csr_for, new_key

    der = x509.load_pem_x509_csr(csr_for(new_key())).public_bytes(serialization.Encoding.DER)
    with env.client() as http:
        return http.post(
            "/.well-known/est/simpleenroll",
            content=base64.b64encode(der),
            headers={"Content-Type": "application/pkcs10"},
            auth=("est", password),
        )


def test_forged_est_password_is_refused(env: Env) -> None:
    """A password with another token's id, or a MAC that does not verify, is a refused token:
    401 with a Basic challenge, nothing issued, the token still unused, the refusal audited."""
    from tests.provisioning.conftest import assert_refused

    env.add_device()
    _, claims = env.services.operators.create_enrollment_token(
        operator="operator:test", now=env.now(), device=DEVICE, ttl_s=900
    )
    genuine = env.token_key.est_password(claims.token_id)
    forged = genuine[:-4] + ("AAAA" if not genuine.endswith("AAAA") else "BBBB")
    before = env.snapshot()
    r = est_basic_enroll(env, forged)
    assert r.headers["www-authenticate"].startswith("Basic ")
    assert_refused(env, before, r, action="provisioning.enroll.refused", reason="does not verify")
    assert env.registry.token(claims.token_id).used_at is None  # type: ignore[union-attr]


def test_a_refused_est_token_is_challenged_with_basic(env: Env) -> None:
    """RFC 7030 section 3.2.3: EST clients answer an HTTP Basic challenge."""
    env.add_device()
    with env.client() as http:
        r = http.post(
            "/.well-known/est/simpleenroll",
            content=b"MIIB",
            headers={"Content-Type": "application/pkcs10"},
        )
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic ")
    assert env.last_audit()["action"] == "provisioning.enroll.refused"


def test_expired_est_password_is_refused(env: Env) -> None:
    from datetime import timedelta

    from tests.provisioning.conftest import assert_refused

    env.add_device()
    _, claims = env.services.operators.create_enrollment_token(
        operator="operator:test", now=env.now() - timedelta(hours=2), device=DEVICE, ttl_s=60
    )
    before = env.snapshot()
    r = est_basic_enroll(env, env.token_key.est_password(claims.token_id))
    assert_refused(env, before, r, action="provisioning.enroll.refused", reason="expired")


def test_the_cli_prints_an_est_password_on_request(tmp_path: Path) -> None:
    from provisioning.tokens import is_est_password
    from tests.provisioning.test_cli_service import idmz

    home = tmp_path / "home"
    idmz(home, "provisioning", "device", "add", DEVICE)
    out = idmz(home, "provisioning", "token", "create", "--device", DEVICE, "--est-password")
    assert is_est_password(out.stdout.splitlines()[-1])
