"""The repository's role keys: TUF signers from PEM files (securesystemslib behind this module).

* root: offline. ``idmz release init`` generates it into a directory the operator then takes
  offline (0600); it is needed again only to change who signs (`ReleaseRepository.set_signers`).
* targets: the release signers: the keys of ``model-signer`` certificates (`pki.profiles`), so
  the same accountable key signs a model's bundle (ADR 0061) and the targets that offer it.
* snapshot and timestamp: one online key under ``<home>/release/keys/online.pem`` (0600), used
  by ``publish`` and by ``serve`` to renew the short-lived timestamp.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509 import load_pem_x509_certificate
from securesystemslib.signer import CryptoSigner, SSlibKey

from bedrock.files import write_atomic
from pki.keys import private_key_pem
from release.errors import ReleaseConfigError

ROOT_KEY_FILE = "root-key.pem"


def generate_key(path: Path) -> CryptoSigner:
    """A new ECDSA P-256 key written to ``path`` (0600); the private key never leaves it."""
    key = ec.generate_private_key(ec.SECP256R1())
    write_atomic(path, private_key_pem(key, None), 0o600)
    return CryptoSigner(key)


def load_signer(key_path: Path, *, password: bytes | None = None) -> CryptoSigner:
    """A signer from a PEM private key file (ECDSA or Ed25519) that only its owner can read
    (0600): a root, online or release signer key readable by others is refused, not used."""
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            raise ReleaseConfigError(
                f"the signing key {key_path} must be readable by its owner only (0600); "
                f"found {mode:04o}"
            )
        key = load_pem_private_key(key_path.read_bytes(), password=password)
        return CryptoSigner(key)
    except (OSError, ValueError, TypeError) as exc:
        raise ReleaseConfigError(f"cannot load the signing key {key_path}: {exc}") from exc


def public_key_of_certificate(cert_pem: bytes) -> SSlibKey:
    """The TUF key of a release signer's certificate (its subject public key)."""
    try:
        return SSlibKey.from_crypto(load_pem_x509_certificate(cert_pem).public_key())
    except ValueError as exc:
        raise ReleaseConfigError(f"release signer certificate: {exc}") from exc
