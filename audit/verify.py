"""Re-verify a whole log from its files: framing, sequence, leaf hashes, the Merkle root, and
the latest checkpoint's signature and root.

    >>> result = verify_log(Path("idmz-data/audit"), VerifierKey.parse(pinned_vkey))
    >>> result.size, result.checkpoint.checkpoint.size

The first problem found raises `LogCorruptedError` naming the first bad index. Work per entry
is one slice, one SHA-256, one compare and one small JSON parse; the tree is built with the
streaming builder, so a million entries verify in seconds and memory stays bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from audit.checkpoint import SignedCheckpoint, verify_checkpoint
from audit.errors import CheckpointError, LogCorruptedError
from audit.merkle import EMPTY_ROOT, TreeBuilder
from audit.note import VerifierKey
from audit.storage import RECORD_BYTES, LogPaths, read_index

_CHUNK_ENTRIES = 65536


@dataclass(frozen=True, slots=True)
class VerifiedLog:
    """A log that passed verification. Entries past ``checkpoint`` (``unsigned_entries``) are
    intact against the index but no signature covers them yet; ``torn_tail_bytes`` are bytes
    of a write that was never acknowledged (a crash), which the next writer truncates."""

    size: int
    root_hash: bytes
    checkpoint: SignedCheckpoint
    unsigned_entries: int
    torn_tail_bytes: int
    witnessed: SignedCheckpoint | None = None


def read_checkpoint(
    path: Path,
    log_key: VerifierKey,
    *,
    witness_keys: Sequence[VerifierKey] = (),
    min_cosigners: int = 0,
) -> SignedCheckpoint:
    """A checkpoint file of the log, verified against the pinned log key (and witnesses)."""
    try:
        note = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise LogCorruptedError(f"{path} is missing") from exc
    except UnicodeDecodeError as exc:
        raise LogCorruptedError(f"{path} is not UTF-8 text") from exc
    try:
        return verify_checkpoint(
            note, log_key, witness_keys=witness_keys, min_cosigners=min_cosigners
        )
    except CheckpointError as exc:
        raise LogCorruptedError(f"checkpoint rejected (forged or altered?): {exc}") from exc


def verify_log(
    directory: Path,
    log_key: VerifierKey,
    *,
    witness_keys: Sequence[VerifierKey] = (),
    min_cosigners: int = 0,
) -> VerifiedLog:
    """Verify every entry and the latest checkpoint; raise `LogCorruptedError` at the first
    bad index. ``log_key`` should be pinned by the auditor, not read from the directory. The
    witnessed checkpoint (``checkpoint.cosigned``), if present, must also match the log;
    with ``min_cosigners`` it must exist and carry that many cosignatures from
    ``witness_keys``."""
    paths = LogPaths(directory)
    paths.check_format()
    signed = read_checkpoint(paths.checkpoint, log_key)
    cp = signed.checkpoint
    witnessed: SignedCheckpoint | None = None
    if paths.cosigned.exists() or min_cosigners > 0:
        witnessed = read_checkpoint(
            paths.cosigned, log_key, witness_keys=witness_keys, min_cosigners=min_cosigners
        )
    anchors = [cp] + ([witnessed.checkpoint] if witnessed else [])
    targets = sorted({a.size for a in anchors})
    roots: dict[int, bytes] = {0: EMPTY_ROOT}
    index = read_index(paths)
    n = len(index) // RECORD_BYTES
    tree = TreeBuilder()
    sha256, loads = hashlib.sha256, json.loads
    with open(paths.entries, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        start = 0
        for first in range(0, n, _CHUNK_ENTRIES):
            last = min(n, first + _CHUNK_ENTRIES)
            ends = [
                int.from_bytes(index[i * RECORD_BYTES : i * RECORD_BYTES + 8], "big")
                for i in range(first, last)
            ]
            chunk_end = max(ends[-1], start)
            chunk = fh.read(max(0, min(chunk_end, file_size) - start))
            base = start
            hashes: list[bytes] = []
            for i, end in enumerate(ends, first):
                if end <= start:
                    raise LogCorruptedError(f"index record {i} goes backwards", index=i)
                if end > file_size:
                    raise LogCorruptedError(
                        f"entry {i} is missing: the entries file ends at byte {file_size} "
                        f"(truncated)",
                        index=i,
                    )
                line = chunk[start - base : end - base]
                data = line[:-1]
                if line[-1:] != b"\n" or b"\n" in data:
                    raise LogCorruptedError(f"entry {i} is not one framed line", index=i)
                h = sha256(b"\x00" + data).digest()
                o = i * RECORD_BYTES + 8
                if h != index[o : o + 32]:
                    raise LogCorruptedError(
                        f"entry {i} does not match its recorded leaf hash (changed, removed "
                        f"or reordered)",
                        index=i,
                    )
                try:
                    seq = loads(data)["seq"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise LogCorruptedError(f"entry {i} is not an audit record", index=i) from exc
                if seq != i:
                    raise LogCorruptedError(
                        f"entry {i} carries sequence number {seq} (removed or reordered)",
                        index=i,
                    )
                hashes.append(h)
                start = end
            pos = first
            for t in targets:
                if first < t <= last:
                    tree.extend(hashes[pos - first : t - first])
                    roots[t], pos = tree.root(), t
            tree.extend(hashes[pos - first :])
    for anchor in anchors:
        what = "witnessed" if witnessed and anchor is witnessed.checkpoint else "signed"
        if anchor.size > n:
            raise LogCorruptedError(
                f"the {what} checkpoint covers {anchor.size} entries but the log has {n}: "
                f"entries from index {n} were removed (truncated log)",
                index=n,
            )
        if roots.get(anchor.size) != anchor.root_hash:
            raise LogCorruptedError(
                f"entries 0..{anchor.size - 1} do not match the {what} checkpoint's root "
                "(entries were rewritten together with the index)",
                index=None,
            )
    return VerifiedLog(n, tree.root(), signed, n - cp.size, file_size - start, witnessed)
