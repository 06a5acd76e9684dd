"""Settings, state and side effects behind `idmz ca`: the passphrase, the Vault settings, the CA
backend, audit records and the files the commands write. Only `idmz` reads env and files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import bedrock.errors as category
from idmz.home import Home, resolve_home
from idmz.secrets import ca_passphrase

if TYPE_CHECKING:
    from pki.authority import CertificateAuthority
    from pki.local import LocalCA


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


@contextmanager
def authority(args: argparse.Namespace) -> Iterator[CertificateAuthority]:
    home = home_of(args)
    if getattr(args, "backend", "local") == "vault":
        from idmz.vault_settings import connect_vault

        vault = connect_vault(home)
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
