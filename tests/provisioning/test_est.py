"""EST (RFC 7030) with independent clients: curl and openssl only, no idmz code on the device."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from cryptography import x509

from tests.provisioning.conftest import DEVICE, Env


def run(*argv: str | Path, stdin: bytes | None = None) -> bytes:
    result = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def pem_blocks(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [
        block.strip() + "\n" + marker + "\n" for block in text.split(marker) if "BEGIN" in block
    ]


def openssl_csr(workdir: Path, name: str) -> tuple[Path, Path]:
    key, der, b64 = workdir / f"{name}.key", workdir / f"{name}.der", workdir / f"{name}.b64"
    run(
        "openssl",
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-subj",
        "/CN=est-client",
        "-outform",
        "DER",
        "-out",
        der,
    )
    run("openssl", "base64", "-in", der, "-out", b64)
    return key, b64


def p7_to_pem(workdir: Path, b64_body: bytes, name: str) -> Path:
    (workdir / f"{name}.p7.b64").write_bytes(b64_body)
    # One base64 line (RFC 8951 section 3.1): -A reads it whole.
    der = run("openssl", "base64", "-d", "-A", "-in", workdir / f"{name}.p7.b64")
    out = workdir / f"{name}.pem"
    run("openssl", "pkcs7", "-inform", "DER", "-print_certs", "-out", out, stdin=der)
    return out


def test_est_enrollment_and_reenrollment_with_curl_and_openssl(env: Env, tmp_path: Path) -> None:
    env.add_device()
    token = env.token()
    base = f"{env.url}/.well-known/est"

    # 4.1 cacerts, fetched without trust, then pinned: the root's SHA-256 must equal the pin.
    cacerts = p7_to_pem(tmp_path, run("curl", "-sS", "--fail", "-k", f"{base}/cacerts"), "cacerts")
    blocks = pem_blocks(cacerts.read_text())
    assert len(blocks) == 2
    roots = []
    for block in blocks:
        subject = run("openssl", "x509", "-noout", "-subject", stdin=block.encode())
        issuer = run("openssl", "x509", "-noout", "-issuer", stdin=block.encode())
        if subject.split(b"=", 1)[1] == issuer.split(b"=", 1)[1]:
            roots.append(block)
    (root := tmp_path / "root.pem").write_text(roots[0])
    (issuing := tmp_path / "issuing.pem").write_text(next(b for b in blocks if b not in roots))
    der = run("openssl", "x509", "-in", root, "-outform", "DER")
    assert hashlib.sha256(der).hexdigest() == env.fingerprint

    # 4.2.1 simpleenroll: base64 DER PKCS#10, the one-time token as the Basic password.
    key, csr_b64 = openssl_csr(tmp_path, "device")
    body = run(
        "curl",
        "-sS",
        "--fail",
        "--cacert",
        root,
        "-u",
        f"est:{token}",
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        f"@{csr_b64}",
        f"{base}/simpleenroll",
    )
    cert = p7_to_pem(tmp_path, body, "cert")
    run("openssl", "verify", "-CAfile", root, "-untrusted", issuing, cert)
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{DEVICE}"]
    assert env.last_audit()["details"]["via"] == "est"

    # The token was single-use: the same request again is refused.
    replay = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            str(root),
            "-u",
            f"est:{token}",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            f"@{csr_b64}",
            f"{base}/simpleenroll",
        ],
        capture_output=True,
        text=True,
    )
    assert replay.stdout == "401"

    # 4.2.2 simplereenroll, authenticated by the current certificate over mutual TLS.
    _, csr2 = openssl_csr(tmp_path, "renewal")
    body = run(
        "curl",
        "-sS",
        "--fail",
        "--cacert",
        root,
        "--cert",
        cert,
        "--key",
        key,
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        f"@{csr2}",
        f"{base}/simplereenroll",
    )
    renewed = p7_to_pem(tmp_path, body, "renewed")
    run("openssl", "verify", "-CAfile", root, "-untrusted", issuing, renewed)
    assert x509.load_pem_x509_certificate(renewed.read_bytes()).serial_number != leaf.serial_number
    assert env.last_audit()["action"] == "provisioning.renew.accepted"


def test_est_simpleenroll_accepts_a_bearer_token(env: Env, tmp_path: Path) -> None:
    env.add_device()
    _, csr_b64 = openssl_csr(tmp_path, "device")
    body = run(
        "curl",
        "-sS",
        "--fail",
        "--cacert",
        env.root_file,
        "-H",
        f"Authorization: Bearer {env.token()}",
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        f"@{csr_b64}",
        f"{env.url}/.well-known/est/simpleenroll",
    )
    assert b"MII" in body


def test_est_simpleenroll_with_a_body_that_is_not_base64_is_refused(env: Env) -> None:
    env.add_device()
    before = env.snapshot()
    with env.client() as http:
        r = http.post(
            "/.well-known/est/simpleenroll",
            content=b"%%% not base64 %%%",
            headers={
                "Authorization": f"Bearer {env.token()}",
                "Content-Type": "application/pkcs10",
            },
        )
    assert r.status_code == 400
    assert env.snapshot() == before
    assert "not base64" in env.last_audit()["reason"]
