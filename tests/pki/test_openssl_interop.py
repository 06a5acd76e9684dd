"""An independent peer agrees: openssl verifies what the CA issues, and honours its CRL."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pki.authority import RevocationReason
from pki.csr import verify_csr
from pki.keys import KeyPolicy
from pki.profiles import ProfileName
from tests.pki.conftest import DEVICE
from tests.support.ca import ProductCA, make_ca, make_csr


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def device_pem(local_ca: ProductCA, tmp_path: Path) -> tuple[Path, int]:
    issued = local_ca.ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=local_ca.now
    )
    path = tmp_path / "device.pem"
    path.write_bytes(issued.leaf_pem())
    return path, issued.serial


def verify(fx: ProductCA, leaf: Path) -> subprocess.CompletedProcess[str]:
    return openssl(
        "verify", "-crl_check",
        "-CAfile", str(fx.dir / "root.pem"),
        "-untrusted", str(fx.dir / "issuing.pem"),
        "-CRLfile", str(fx.dir / "crl.pem"),
        "-purpose", "sslclient",
        str(leaf),
    )  # fmt: skip


def test_openssl_accepts_a_fresh_device_certificate_with_crl_checking(
    local_ca: ProductCA, device_pem: tuple[Path, int]
) -> None:
    result = verify(local_ca, device_pem[0])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{device_pem[0]}: OK"


def test_openssl_rejects_the_certificate_after_revocation(
    local_ca: ProductCA, device_pem: tuple[Path, int]
) -> None:
    local_ca.ca.revoke(device_pem[1], RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    result = verify(local_ca, device_pem[0])
    # openssl verify exits 2 and reports X509_V_ERR_CERT_REVOKED (error 23).
    assert result.returncode == 2
    assert "error 23 at 0 depth lookup: certificate revoked" in result.stdout + result.stderr


def test_openssl_rejects_a_certificate_from_another_ca(local_ca: ProductCA, tmp_path: Path) -> None:
    rogue = make_ca(tmp_path / "rogue", now=local_ca.now).ca
    leaf = tmp_path / "rogue.pem"
    leaf.write_bytes(
        rogue.issue(
            verify_csr(make_csr(), KeyPolicy()),
            DEVICE,
            profile=ProfileName.DEVICE,
            now=local_ca.now,
        ).leaf_pem()
    )
    rogue.close()
    result = verify(local_ca, leaf)
    assert result.returncode == 2
    assert "unable to get local issuer certificate" in result.stdout + result.stderr


def test_openssl_shows_the_spiffe_san_and_the_device_key_usages(
    device_pem: tuple[Path, int],
) -> None:
    text = openssl("x509", "-in", str(device_pem[0]), "-noout", "-text").stdout
    assert f"URI:{DEVICE.spiffe_id}" in text
    assert f"Subject: CN = {DEVICE.path}" in text
    assert "CA:FALSE" in text
    assert "Digital Signature" in text and "Certificate Sign" not in text
    assert "TLS Web Client Authentication" in text and "TLS Web Server Authentication" not in text


def test_openssl_reads_the_crl_signature_next_update_and_reason(
    local_ca: ProductCA, device_pem: tuple[Path, int]
) -> None:
    local_ca.ca.revoke(device_pem[1], RevocationReason.KEY_COMPROMISE, now=local_ca.now)
    result = openssl(
        "crl",
        "-in",
        str(local_ca.dir / "crl.pem"),
        "-CAfile",
        str(local_ca.dir / "chain.pem"),
        "-noout",
        "-text",
    )
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr
    assert "Next Update:" in result.stdout and "Next Update: NONE" not in result.stdout
    assert format(device_pem[1], "X").upper() in result.stdout.replace(":", "").upper()
    assert "Key Compromise" in result.stdout
    der = openssl(
        "crl", "-inform", "DER", "-in", str(local_ca.dir / "crl.der"), "-noout", "-crlnumber"
    )
    assert der.returncode == 0 and der.stdout.startswith("crlNumber=")


def test_p384_ca_signs_with_sha384_and_openssl_agrees(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    fx = make_ca(tmp_path / "ca", now=now, key_type="ec-p384")
    ca = fx.ca
    issued = ca.issue(
        verify_csr(make_csr(), KeyPolicy()), DEVICE, profile=ProfileName.DEVICE, now=now
    )
    ca.close()
    assert issued.certificate.signature_hash_algorithm is not None
    assert issued.certificate.signature_hash_algorithm.name == "sha384"
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(issued.leaf_pem())
    result = verify(fx, leaf)
    assert result.returncode == 0, result.stdout + result.stderr
