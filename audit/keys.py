"""The log's checkpoint signing key on disk: a 0600 PKCS#8 PEM file, created on first open,
with the public verifier key (signed-note vkey) written beside it for auditors to pin."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from audit.errors import AuditConfigError
from audit.note import Cosigner, NoteSigner, VerifierKey
from bedrock.files import fsync_dir, write_atomic

KEY_FILE = "checkpoint-key.pem"
VKEY_FILE = "checkpoint.vkey"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 key that only its owner can read."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuditConfigError(f"key file {path} must have mode 0600, found {mode:04o}")
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditConfigError(f"key file {path} does not hold an Ed25519 private key")
    return key


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Load the key at ``path``, or generate one there (mode 0600 from creation)."""
    if path.exists():
        return load_private_key(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        _write_new(path, pem, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_private_key(path)
    fsync_dir(path.parent)
    return key


def write_vkey(path: Path, key: VerifierKey) -> None:
    """Write the public verifier key (0644) atomically, if it is not already there."""
    text = key.vkey + "\n"
    if not path.exists() or path.read_text() != text:
        write_atomic(path, text.encode(), 0o644)


def log_signer(directory: Path, origin: str, key: Ed25519PrivateKey | None) -> NoteSigner:
    """The checkpoint signer for the log in ``directory``."""
    signer = NoteSigner(origin, key or load_or_create_key(directory / KEY_FILE))
    vkey_path = directory / VKEY_FILE
    if vkey_path.exists():
        pinned = read_vkey(vkey_path)
        if pinned != signer.verifier:
            # A log never changes its origin or key: auditors pinned the old one.
            raise AuditConfigError(
                f"the log in {directory} is signed as {pinned.vkey}; refusing to switch to "
                f"{signer.verifier.vkey}"
            )
    write_vkey(vkey_path, signer.verifier)
    return signer


def existing_origin(directory: Path) -> str | None:
    """The origin of the log in ``directory``, if it has been created."""
    path = directory / VKEY_FILE
    return read_vkey(path).name if path.exists() else None


def witness_cosigner(state_dir: Path, name: str) -> Cosigner:
    """The witness's cosigning key in its state directory (created on first start)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cosigner = Cosigner(name, load_or_create_key(state_dir / "witness-key.pem"))
    write_vkey(state_dir / "witness.vkey", cosigner.verifier)
    return cosigner


def read_vkey(path: Path) -> VerifierKey:
    try:
        return VerifierKey.parse(path.read_text())
    except FileNotFoundError as exc:
        raise AuditConfigError(f"verifier key file {path} does not exist") from exc
