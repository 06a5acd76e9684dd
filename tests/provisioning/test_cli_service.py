"""The demo path with nothing but the CLI: serve, register, mint, enroll, renew, revoke."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def test_serve_enroll_renew_revoke_with_the_cli(tmp_path: Path) -> None:
    home, gw = tmp_path / "home", tmp_path / "gw"
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idmz",
            "--home",
            str(home),
            "provisioning",
            "serve",
            "--port",
            str(port),
            "--server-names",
            "idmz.plant1.example",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: port_open(port), timeout_s=60, what="idmz provisioning serve")
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
        url = f"https://127.0.0.1:{port}"
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
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
