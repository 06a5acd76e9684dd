"""Offline-verifiable entry proofs in the c2sp.org/tlog-proof@v1 text format.

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry's JSON bytes>
    index <N>
    <base64 inclusion proof hashes, leaf's sibling first (RFC 6962 section 2.1.1)>

    <signed checkpoint, verbatim (with any witness cosignatures)>

The entry travels in ``extra`` so one file is enough; the spec says extra data is not
authenticated by itself, and it is not trusted here either: its leaf hash must be proven
included under the verified checkpoint, or an ``entry`` given separately must match it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from audit.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    is_decimal,
    sign_checkpoint,
    verify_checkpoint,
)
from audit.errors import ProofError
from audit.merkle import inclusion_proof, leaf_hash, root_of, verify_inclusion
from audit.note import NoteSigner, VerifierKey
from audit.storage import LeafHashes, LogPaths, read_entry, read_index

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_LINES = 63


@dataclass(frozen=True, slots=True)
class VerifiedEntry:
    """An entry proven to be at ``index`` of the log under a verified checkpoint."""

    index: int
    entry: bytes
    checkpoint: SignedCheckpoint


def format_proof(index: int, entry: bytes, proof: Sequence[bytes], checkpoint_note: str) -> str:
    lines = [HEADER, f"extra {base64.b64encode(entry).decode()}", f"index {index}"]
    lines += [base64.b64encode(h).decode() for h in proof]
    return "\n".join(lines) + "\n\n" + checkpoint_note


def build_proof(
    paths: LogPaths, index: int, *, checkpoint_note: str, size: int | None = None,
    signer: NoteSigner | None = None,
) -> str:  # fmt: skip
    """A tlog-proof for entry ``index``: under ``checkpoint_note`` (the log's latest), or
    under a new checkpoint of the first ``size`` entries signed by ``signer``."""
    index_bytes = read_index(paths)
    leaves = LeafHashes(index_bytes)
    if size is not None:
        if signer is None:
            raise ProofError("a proof for another size needs the log's signing key")
        if not 0 < size <= len(leaves):
            raise ProofError(f"size {size} is outside the log (size {len(leaves)})")
        cp = Checkpoint(signer.name, size, root_of(leaves[:size]))
        checkpoint_note = sign_checkpoint(cp, signer)
    cp_size = int(checkpoint_note.split("\n")[1])
    if not 0 <= index < cp_size:
        raise ProofError(f"index {index} is not covered by the checkpoint (size {cp_size})")
    entry = read_entry(paths, index_bytes, index)
    return format_proof(index, entry, inclusion_proof(index, cp_size, leaves), checkpoint_note)


def verify_proof(
    text: str,
    log_key: VerifierKey,
    *,
    entry: bytes | None = None,
    witness_keys: Sequence[VerifierKey] = (),
    min_cosigners: int = 0,
) -> VerifiedEntry:
    """Verify a tlog-proof without the log: checkpoint signature (and cosignatures), then
    the inclusion of ``entry`` (or the embedded one) at the stated index."""
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or len(lines) < 2 or lines[0] != HEADER:
        raise ProofError(f"not a {HEADER} proof")
    extra: bytes | None = None
    pos = 1
    try:
        if lines[pos].startswith("extra "):
            extra = base64.b64decode(lines[pos][6:], validate=True)
            pos += 1
        if not lines[pos].startswith("index ") or not is_decimal(lines[pos][6:]):
            raise ProofError("proof has no 'index <N>' line")
        index = int(lines[pos][6:])
        hashes = [base64.b64decode(x, validate=True) for x in lines[pos + 1 :]]
    except (IndexError, ValueError) as exc:
        raise ProofError("malformed proof lines") from exc
    if len(hashes) > MAX_PROOF_LINES:
        raise ProofError(f"proof has more than {MAX_PROOF_LINES} hashes")
    signed = verify_checkpoint(
        note, log_key, witness_keys=witness_keys, min_cosigners=min_cosigners
    )
    data = entry if entry is not None else extra
    if data is None:
        raise ProofError("the proof carries no entry and none was given")
    if entry is not None and extra is not None and entry != extra:
        raise ProofError(f"the given entry is not the one in the proof for index {index}")
    cp = signed.checkpoint
    verify_inclusion(index, cp.size, leaf_hash(data), hashes, cp.root_hash)
    return VerifiedEntry(index, data, signed)
