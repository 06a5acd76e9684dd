"""A witness: remembers the last checkpoint it accepted for each log and cosigns a new one only
if it is consistent with it (c2sp.org/tlog-witness, c2sp.org/tlog-cosignature).

    >>> witness = Witness(state_dir, cosigner, [log_vkey], clock=SystemClock())
    >>> cosignature_lines = witness.add_checkpoint(request_body)

It is meant to run apart from the log (the IT side, or the auditor's machine): an attacker who
holds the log's key can rewrite the log, but cannot make this witness sign a history that
forks from, or rolls back, the one it already cosigned. State is one file per origin, replaced
atomically and fsynced before the cosignature is returned; checking and updating happen under
one lock (the rollback race in tlog-witness "add-checkpoint").
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from audit.checkpoint import Checkpoint, SignedCheckpoint, is_decimal, verify_checkpoint
from audit.errors import CheckpointError, ProofError, WitnessRefusedError
from audit.merkle import EMPTY_ROOT, verify_consistency
from audit.note import Cosigner, VerifierKey
from bedrock.clock import Clock
from bedrock.files import write_atomic

MAX_PROOF_LINES = 63  # tlog-witness: clients MUST NOT send more
MAX_REQUEST_BYTES = 64 * 1024


def parse_request(body: bytes) -> tuple[int, list[bytes], str]:
    """(old size, consistency proof, checkpoint note) from an add-checkpoint body."""
    if len(body) > MAX_REQUEST_BYTES:
        raise WitnessRefusedError("request too large", status=400)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WitnessRefusedError("request is not UTF-8", status=400) from exc
    head, sep, note = text.partition("\n\n")
    lines = head.split("\n")
    old = lines[0][4:] if lines[0].startswith("old ") else ""
    if not sep or not is_decimal(old):
        raise WitnessRefusedError("request must start with 'old <size>'", status=400)
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusedError(f"more than {MAX_PROOF_LINES} proof lines", status=400)
    try:
        proof = [base64.b64decode(x, validate=True) for x in lines[1:]]
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise WitnessRefusedError("proof line is not base64", status=400) from exc
    return int(old), proof, note


def format_request(old_size: int, proof: Sequence[bytes], checkpoint_note: str) -> bytes:
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + checkpoint_note).encode()


class Witness:
    def __init__(
        self,
        state_dir: Path,
        cosigner: Cosigner,
        log_keys: Sequence[VerifierKey],
        *,
        clock: Clock,
    ) -> None:
        self.state_dir = state_dir
        self.cosigner = cosigner
        self.clock = clock
        self._log_keys = {k.name: k for k in log_keys}
        self._mutex = threading.Lock()
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)

    def close(self) -> None:
        os.close(self._lock_fd)

    def _state_path(self, origin: str) -> Path:
        return self.state_dir / f"{hashlib.sha256(origin.encode()).hexdigest()[:32]}.checkpoint"

    def latest(self, origin: str) -> Checkpoint | None:
        """The last checkpoint this witness cosigned for ``origin``."""
        key = self._log_keys.get(origin)
        path = self._state_path(origin)
        if key is None or not path.exists():
            return None
        return verify_checkpoint(path.read_text(), key).checkpoint

    def add_checkpoint(self, body: bytes) -> str:
        """Handle one tlog-witness add-checkpoint request; return the cosignature line(s).
        Raises `WitnessRefusedError` with the spec's HTTP status."""
        old_size, proof, note = parse_request(body)
        origin = note.split("\n", 1)[0]
        key = self._log_keys.get(origin)
        if key is None:
            raise WitnessRefusedError(f"unknown log origin {origin!r}", status=404)
        try:
            signed = verify_checkpoint(note, key)
        except CheckpointError as exc:
            raise WitnessRefusedError(f"checkpoint signature: {exc}", status=403) from exc
        if old_size > signed.checkpoint.size:
            raise WitnessRefusedError(
                f"old size {old_size} > size {signed.checkpoint.size}", status=400
            )
        with self._mutex:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)  # one check-and-update at a time
            try:
                return self._check_and_update(origin, old_size, proof, signed)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _check_and_update(
        self, origin: str, old_size: int, proof: list[bytes], signed: SignedCheckpoint
    ) -> str:
        new = signed.checkpoint
        current = self.latest(origin)
        current_size = current.size if current else 0
        if old_size != current_size:
            raise WitnessRefusedError(
                f"old size {old_size} is not the witnessed size {current_size}",
                status=409,
                witness_size=current_size,
            )
        if new.size == 0 and new.root_hash != EMPTY_ROOT:
            raise WitnessRefusedError("a size-0 checkpoint must carry the empty root", status=422)
        if current is None or current.size == 0:
            if proof:
                raise WitnessRefusedError("proof must be empty from size 0", status=422)
        elif current.size == new.size:
            if proof or current.root_hash != new.root_hash:
                raise WitnessRefusedError(
                    f"a different root for the witnessed size {new.size} (fork)",
                    status=409,
                    witness_size=current_size,
                )
        else:
            try:
                verify_consistency(current.size, new.size, current.root_hash, new.root_hash, proof)
            except ProofError as exc:
                raise WitnessRefusedError(
                    f"not consistent with witnessed size {current.size}: {exc}", status=422
                ) from exc
        # Persist (fsync) before answering: a cosigned size is never forgotten.
        write_atomic(self._state_path(origin), signed.note.encode(), 0o600)
        timestamp = int(self.clock.now().timestamp())
        return self.cosigner.signature_line(new.body(), timestamp=timestamp)
