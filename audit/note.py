"""C2SP signed-note: Ed25519 note signatures, timestamped cosignatures, verifier keys.

    >>> signer = NoteSigner.generate("plant1.example/idmz-audit")
    >>> note = signer.sign_note("hello\\n")
    >>> open_note(note, [signer.verifier]).text
    'hello\\n'

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> base64(key ID || signature)`` (c2sp.org/signed-note). Key ID =
``SHA-256(name || 0x0A || type || public key)[:4]``; type 0x01 is an Ed25519 note signature,
0x04 an Ed25519 cosignature whose signature is ``u64 timestamp || sig`` over
``cosignature/v1\\ntime <t>\\n`` + the note text (c2sp.org/tlog-cosignature).
A verifier key ("vkey") is ``<name>+<hex key ID>+<base64(type || public key)>``.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import AuditConfigError, CheckpointError

ED25519 = 0x01  # signed-note: Ed25519 note signature
COSIGNATURE_V1 = 0x04  # tlog-cosignature: timestamped Ed25519 witness cosignature
SIGNATURE_PREFIX = "— "  # em dash U+2014, space
MAX_SIGNATURES = 64  # signed-note: verifiers MUST accept at least 16
MAX_NOTE_BYTES = 64 * 1024


def check_key_name(name: str) -> str:
    """Key names are non-empty and contain no Unicode spaces and no '+' (signed-note)."""
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise AuditConfigError(f"invalid signed-note key name {name!r}: non-empty, no spaces/'+'")
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (signed-note, tlog-cosignature)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A trusted public key for notes (type 0x01) or cosignatures (type 0x04)."""

    name: str
    sig_type: int
    public_key: bytes  # 32-byte raw Ed25519 public key

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    @property
    def vkey(self) -> str:
        """The signed-note verifier-key string, for auditors to pin."""
        blob = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Parse ``<name>+<hex key ID>+<base64(type || key)>``; the key ID must match."""
        parts = vkey.strip().split("+", 2)  # the base64 part may itself contain "+"
        if len(parts) != 3:
            raise AuditConfigError("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, b64 = parts
        check_key_name(name)
        try:
            blob = base64.b64decode(b64, validate=True)
            claimed_id = bytes.fromhex(hex_id)
        except ValueError as exc:  # binascii.Error, or non-ASCII text
            raise AuditConfigError(f"verifier key for {name!r} is not valid hex/base64") from exc
        if len(blob) != 33 or blob[0] not in (ED25519, COSIGNATURE_V1) or len(hex_id) != 8:
            raise AuditConfigError(
                f"verifier key for {name!r} must be an Ed25519 (0x01) or cosignature (0x04) key"
            )
        key = cls(name, blob[0], blob[1:])
        if key.key_id != claimed_id:
            raise AuditConfigError(f"verifier key for {name!r}: key ID does not match the key")
        return key

    def _verify(self, signature: bytes, message: bytes) -> None:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature as exc:
            raise CheckpointError(f"signature by {self.name} does not verify") from exc


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """Signs notes with an Ed25519 key under a key name (type 0x01)."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, ED25519, _raw_public(self.private_key.public_key()))

    def signature_line(self, text: str) -> str:
        sig = self.private_key.sign(text.encode())
        blob = base64.b64encode(self.verifier.key_id + sig).decode()
        return f"{SIGNATURE_PREFIX}{self.name} {blob}\n"

    def sign_note(self, text: str) -> str:
        _check_text(text)
        return f"{text}\n{self.signature_line(text)}"


@dataclass(frozen=True, slots=True)
class Cosigner:
    """A witness key: timestamped Ed25519 cosignatures (tlog-cosignature, type 0x04)."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_key_name(self.name)

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, COSIGNATURE_V1, _raw_public(self.private_key.public_key()))

    def signature_line(self, text: str, *, timestamp: int) -> str:
        """Cosign note text ``text`` at POSIX time ``timestamp``."""
        if not 0 <= timestamp < 2**63:
            raise AuditConfigError(f"cosignature timestamp {timestamp} is out of range")
        sig = self.private_key.sign(cosigned_message(text, timestamp))
        blob = base64.b64encode(self.verifier.key_id + struct.pack(">Q", timestamp) + sig)
        return f"{SIGNATURE_PREFIX}{self.name} {blob.decode()}\n"


def cosigned_message(text: str, timestamp: int) -> bytes:
    """The message an Ed25519 cosigner signs (tlog-cosignature, "Ed25519 signed message")."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def _check_text(text: str) -> None:
    if not text.endswith("\n") or any(c < " " and c != "\n" for c in text):
        raise CheckpointError("note text must end in a newline and contain no control characters")


@dataclass(frozen=True, slots=True)
class SignatureLine:
    name: str
    key_id: bytes
    signature: bytes  # without the key ID


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note whose text was signed by at least one trusted key. ``signers`` and
    ``cosignatures`` hold one entry per distinct public key (a cosignature: the name and
    timestamp of that key's first valid line)."""

    text: str
    signers: tuple[str, ...]
    cosignatures: tuple[tuple[str, int], ...]
    signature_lines: tuple[str, ...]  # every signature line as received, verified or not


def split_note(note: str) -> tuple[str, list[SignatureLine], list[str]]:
    """Split a note into its text and parsed signature lines (no verification)."""
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise CheckpointError(f"note is larger than {MAX_NOTE_BYTES} bytes")
    if any(c < " " and c != "\n" for c in note):
        raise CheckpointError("note contains control characters")
    cut = note.rfind("\n\n")  # the text is separated from signatures by the last empty line
    if cut < 0 or not note.endswith("\n"):
        raise CheckpointError("note has no blank line between text and signatures")
    text, raw_lines = note[: cut + 1], note[cut + 2 :].splitlines()
    if not raw_lines or len(raw_lines) > MAX_SIGNATURES:
        raise CheckpointError(f"note must carry 1..{MAX_SIGNATURES} signatures")
    sigs: list[SignatureLine] = []
    for line in raw_lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError("malformed signature line (expected '— <name> <base64>')")
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(b64, validate=True)
        except ValueError as exc:  # binascii.Error, or non-ASCII text
            raise CheckpointError(f"signature by {name!r} is not base64") from exc
        if len(blob) < 5 or not name or " " in b64:
            raise CheckpointError(f"malformed signature line for {name!r}")
        sigs.append(SignatureLine(name, blob[:4], blob[4:]))
    return text, sigs, [f"{line}\n" for line in raw_lines]


def open_note(note: str, keys: Sequence[VerifierKey]) -> VerifiedNote:
    """Verify a signed note against trusted keys. Signatures from unknown (name, key ID) pairs
    are ignored; a known key with a bad signature rejects the note; at least one note
    signature (type 0x01) from a known key must verify.

    Signers and cosigners are distinct public keys: a repeated line, or lines from one public
    key trusted under several names, are all verified but count once (the first one), so a
    quorum of ``n`` cosignatures always means ``n`` different witness keys."""
    text, sigs, raw = split_note(note)
    by_id = {(k.name, k.key_id): k for k in keys}
    signers: list[str] = []
    cosigs: list[tuple[str, int]] = []
    counted: set[tuple[int, bytes]] = set()  # (signature type, raw public key)
    for sig in sigs:
        key = by_id.get((sig.name, sig.key_id))
        if key is None:
            continue
        first = (key.sig_type, key.public_key) not in counted
        counted.add((key.sig_type, key.public_key))
        if key.sig_type == COSIGNATURE_V1:
            if len(sig.signature) != 8 + 64:
                raise CheckpointError(f"cosignature by {sig.name} has the wrong length")
            (ts,) = struct.unpack(">Q", sig.signature[:8])
            if ts >= 2**63:
                raise CheckpointError(f"cosignature by {sig.name} has timestamp out of range")
            key._verify(sig.signature[8:], cosigned_message(text, ts))
            if first:
                cosigs.append((sig.name, ts))
        else:
            key._verify(sig.signature, text.encode())
            if first:
                signers.append(sig.name)
    if not signers:
        raise CheckpointError("note is not signed by any trusted key")
    return VerifiedNote(text, tuple(signers), tuple(cosigs), tuple(raw))
