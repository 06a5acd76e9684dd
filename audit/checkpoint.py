"""Checkpoints: the signed statement "the log with this origin has N entries and this root"
(c2sp.org/tlog-checkpoint on c2sp.org/signed-note).

    >>> cp = Checkpoint("plant1.example/idmz-audit", 3, root_hash)
    >>> note = sign_checkpoint(cp, signer)
    >>> verify_checkpoint(note, signer.verifier).checkpoint == cp

Body: origin line, decimal tree size, base64 root hash, each newline-terminated. No extension
lines are written; checkpoints carrying them are refused (nothing of ours would read them).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from audit.errors import CheckpointError
from audit.merkle import HASH_BYTES
from audit.note import NoteSigner, VerifierKey, open_note


def is_decimal(text: str) -> bool:
    """ASCII digits without leading zeros (str.isdigit also accepts other Unicode digits)."""
    return text.isascii() and text.isdigit() and (text == "0" or not text.startswith("0"))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root_hash).decode()}\n"

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) != 4 or lines[3] != "":
            raise CheckpointError("checkpoint body must be exactly origin, size and root lines")
        origin, size_s, root_s = lines[:3]
        if not origin or not is_decimal(size_s):
            raise CheckpointError("checkpoint origin is empty or its size is not a decimal")
        try:
            root = base64.b64decode(root_s, validate=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII text
            raise CheckpointError("checkpoint root hash is not base64") from exc
        if len(root) != HASH_BYTES:
            raise CheckpointError(f"checkpoint root hash must be {HASH_BYTES} bytes")
        return cls(origin, int(size_s), root)


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint whose log signature verified. ``note`` is the full signed note as given
    (including any signature lines from keys we did not check); ``cosigners`` lists the
    witness names whose cosignatures verified, with their timestamps."""

    checkpoint: Checkpoint
    note: str
    cosigners: tuple[tuple[str, int], ...]


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    if signer.name != checkpoint.origin:
        # tlog-checkpoint: the key name SHOULD be the origin; we make it a rule.
        raise CheckpointError(f"signer {signer.name!r} is not the log {checkpoint.origin!r}")
    return signer.sign_note(checkpoint.body())


def verify_checkpoint(
    note: str,
    log_key: VerifierKey,
    *,
    witness_keys: Sequence[VerifierKey] = (),
    min_cosigners: int = 0,
) -> SignedCheckpoint:
    """Verify ``note`` was signed by ``log_key`` and its origin is that key's name; count the
    valid cosignatures from distinct ``witness_keys`` public keys (`open_note`) and require
    ``min_cosigners`` of them."""
    if any(w.public_key == log_key.public_key for w in witness_keys):
        # A witness is only worth counting if it is not the log: the log's key is exactly what
        # an attacker who rewrites history holds.
        raise CheckpointError(f"a witness key is the log key {log_key.name}'s own public key")
    verified = open_note(note, [log_key, *witness_keys])
    if log_key.name not in verified.signers:
        raise CheckpointError(f"checkpoint is not signed by the log key {log_key.name}")
    checkpoint = Checkpoint.parse_body(verified.text)
    if checkpoint.origin != log_key.name:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not the log {log_key.name!r}"
        )
    if len(verified.cosignatures) < min_cosigners:
        raise CheckpointError(
            f"checkpoint at size {checkpoint.size} has {len(verified.cosignatures)} valid "
            f"cosignatures, {min_cosigners} required"
        )
    return SignedCheckpoint(checkpoint, note, verified.cosignatures)
