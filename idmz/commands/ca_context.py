"""Settings, state and side effects behind `idmz ca`: the passphrase, the Vault settings, the CA
backend, audit records and the files the commands write. Only `idmz` reads env and files."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bedrock.errors as category
from idmz.home import Home, load_secret, read_secret_file, resolve_home
from idmz.secrets import ca_passphrase

if TYPE_CHECKING:
    from pki.authority import CertificateAuthority
    from pki.local import LocalCA

VAULT_TOML = "vault.toml"


class CAUsageError(category.UsageError):
    """The command line asked for something impossible (exit code 2)."""


# -- settings -----------------------------------------------------------------------------


def home_of(args: argparse.Namespace) -> Home:
    return resolve_home(args.home)


def passphrase(home: Home, *, create: bool) -> bytes:
    """The CA passphrase (`idmz.secrets`); a generated one is announced on stderr."""
    return ca_passphrase(
        home, create=create, announce=lambda text: print(f"idmz: {text}", file=sys.stderr)
    )


def vault_settings(home: Home) -> dict[str, Any]:
    """Vault settings: ``<home>/ca/vault.toml`` overridden by ``VAULT_*`` variables."""
    settings: dict[str, Any] = {}
    toml_path = home.ca_dir / VAULT_TOML
    if toml_path.exists():
        with toml_path.open("rb") as fh:
            settings.update(tomllib.load(fh))
    env: Mapping[str, str] = os.environ
    for key, var in (
        ("url", "VAULT_ADDR"),
        ("mount", "VAULT_PKI_MOUNT"),
        ("role", "VAULT_PKI_ROLE"),
        ("role_id", "VAULT_ROLE_ID"),
        ("namespace", "VAULT_NAMESPACE"),
        ("ca_bundle", "VAULT_CACERT"),
    ):
        if env.get(var):
            settings[key] = env[var]
    secret = load_secret("VAULT_SECRET_ID")
    if secret is not None:
        settings["secret_id"] = secret.decode()
    elif "secret_id_file" in settings:
        settings["secret_id"] = read_secret_file(Path(settings.pop("secret_id_file"))).decode()
    return settings


@contextmanager
def authority(args: argparse.Namespace) -> Iterator[CertificateAuthority]:
    home = home_of(args)
    if getattr(args, "backend", "local") == "vault":
        from pki.vault import VaultCA, VaultConfig

        vault = VaultCA.connect(VaultConfig.from_mapping(vault_settings(home)))
        try:
            yield vault
        finally:
            vault.close()
        return
    with local(home) as ca:
        yield ca


@contextmanager
def local(home: Home) -> Iterator[LocalCA]:
    from pki.local import LocalCA

    ca = LocalCA.open(home.ca_dir, passphrase=passphrase(home, create=False))
    try:
        yield ca
    finally:
        ca.close()


# -- helpers ------------------------------------------------------------------------------


def read_input(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CAUsageError(f"cannot read {path}: {exc.strerror}") from exc


def write_public(path: Path, data: bytes) -> None:
    """Certificates and CRLs are public: 0644, replaced atomically."""
    from bedrock.files import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, 0o644)


def fingerprint_file(path: Path) -> str:
    from pki.authority import fingerprint_sha256
    from pki.files import load_ca_certificate

    return fingerprint_sha256(load_ca_certificate(path))


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive; found {text}")
    return value


def days(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"days must be positive; found {text}")
    return value
