"""The demo path with nothing but the CLI: serve, register, mint, enroll, renew, revoke."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.net import free_port, port_open, wait_for

DEVICE = "acme/plant1/press/line1/cell2/press-07"
pytestmark = pytest.mark.integration


def idmz(home: Path, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDMZ_")}
    result = subprocess.run(
        [sys.executable, "-m", "idmz", "--home", str(home), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@contextmanager
def serving(home: Path, *options: str) -> Iterator[str]:
    """``idmz provisioning serve`` in its own process; yields its URL, stops it with SIGTERM."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "idmz", "--home", str(home), "provisioning", "serve",
         "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port), timeout_s=60, what="idmz provisioning serve")
        yield f"https://127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def test_serve_enroll_renew_revoke_with_the_cli(tmp_path: Path) -> None:
    home, gw = tmp_path / "home", tmp_path / "gw"
    with serving(home, "--server-names", "idmz.plant1.example") as url:
        fingerprint = idmz(home, "provisioning", "fingerprint").stdout.strip()
        idmz(
            home,
            "provisioning",
            "device",
            "add",
            DEVICE,
            "--class",
            "gateway",
            "--asset",
            "press 7",
        )
        token = idmz(
            home, "provisioning", "token", "create", "--device", DEVICE, "--ttl", "15m"
        ).stdout.splitlines()[-1]
        enrolled = idmz(
            home,
            "enroll",
            "--server",
            url,
            "--token",
            token,
            "--ca-fingerprint",
            fingerprint,
            "--out",
            gw,
        )
        assert DEVICE in enrolled.stdout
        server_cert = x509.load_pem_x509_certificate(
            (home / "provisioning" / "server.pem").read_bytes()
        )
        names = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "idmz.plant1.example" in names.get_values_for_type(x509.DNSName)
        idmz(home, "renew", "--out", gw, "--force")
        revoked = idmz(home, "provisioning", "revoke", DEVICE, "--reason", "key-compromise")
        assert "2 certificate(s)" in revoked.stdout
        refused = idmz(home, "renew", "--out", gw, "--force", check=False)
        assert refused.returncode == 1 and "403" in refused.stderr
        listed = idmz(home, "provisioning", "device", "list").stdout
        assert listed.startswith("revoked")


def test_superseded_certificate_is_refused_after_a_cli_renewal(tmp_path: Path) -> None:
    """`serve --superseded-grace 0s`: the certificate a renewal replaced is on the CRL before
    the renewal returns; openssl, as an independent peer, refuses it and accepts the new one."""
    home, gw = tmp_path / "home", tmp_path / "gw"
    with serving(home, "--superseded-grace", "0s") as url:
        fingerprint = idmz(home, "provisioning", "fingerprint").stdout.strip()
        idmz(home, "provisioning", "device", "add", DEVICE)
        token_file = tmp_path / "token"
        token_file.write_text(
            idmz(home, "provisioning", "token", "create", "--device", DEVICE).stdout.splitlines()[
                -1
            ]
        )
        idmz(home, "enroll", "--server", url, "--token-file", token_file,
             "--ca-fingerprint", fingerprint, "--out", gw)  # fmt: skip
        old = tmp_path / "old.pem"
        old.write_bytes((gw / "cert.pem").read_bytes())
        idmz(home, "renew", "--out", gw, "--force")

        def verify(leaf: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["openssl", "verify", "-crl_check", "-CAfile", str(home / "ca" / "root.pem"),
                 "-untrusted", str(gw / "chain.pem"), "-CRLfile", str(home / "ca" / "crl.pem"),
                 str(leaf)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip

        refused = verify(old)
        assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
        assert verify(gw / "cert.pem").returncode == 0
        listed = idmz(home, "provisioning", "device", "list").stdout
        assert listed.startswith("enrolled")
