"""The witness cosigns only append-only growth: rollback, forks and bad signatures refused,
state persisted before answering. Exercised over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.entry import canonical_json
from audit.errors import LogCorruptedError, WitnessRefusedError
from audit.keys import KEY_FILE, load_private_key, read_vkey, witness_cosigner
from audit.log import AuditLog
from audit.merkle import consistency_proof, leaf_hash, root_of
from audit.note import NoteSigner, VerifierKey
from audit.storage import LogPaths
from audit.verify import verify_log
from audit.witness import Witness, format_request
from audit.witness_http import make_server, submit_checkpoint
from bedrock.clock import FixedClock
from tests.audit.conftest import ORIGIN, entry_lines, fill, refused, rewrite_consistently

NOW = FixedClock(datetime(2026, 11, 22, 3, 0, tzinfo=UTC))


@pytest.fixture
def log_paths(log_dir: Path) -> LogPaths:
    fill(log_dir, 10)
    return LogPaths(log_dir)


@pytest.fixture
def log_key(log_paths: LogPaths) -> VerifierKey:
    return read_vkey(log_paths.directory / "checkpoint.vkey")


@pytest.fixture
def witness(tmp_path: Path, log_key: VerifierKey) -> Iterator[Witness]:
    state = tmp_path / "witness"
    w = Witness(state, witness_cosigner(state, "it.example/witness"), [log_key], clock=NOW)
    yield w
    w.close()


@pytest.fixture
def url(witness: Witness) -> Iterator[str]:
    server = make_server(witness, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_first_checkpoint_is_cosigned_and_persisted(
    url: str, witness: Witness, log_paths: LogPaths, log_key: VerifierKey
) -> None:
    signed = submit_checkpoint(url, log_paths, log_key, witness.cosigner.verifier)
    assert signed.checkpoint.size == 10
    assert signed.cosigners == (("it.example/witness", int(NOW.at.timestamp())),)
    assert witness.latest(ORIGIN) == signed.checkpoint
    assert (log_paths.directory / "checkpoint.cosigned").exists()


def test_growth_is_cosigned_with_a_consistency_proof(
    url: str, witness: Witness, log_paths: LogPaths, log_key: VerifierKey
) -> None:
    submit_checkpoint(url, log_paths, log_key, witness.cosigner.verifier)
    with AuditLog.open(log_paths.directory, origin=ORIGIN) as log:
        for i in range(7):
            log.record(refused(i))
    signed = submit_checkpoint(url, log_paths, log_key, witness.cosigner.verifier)
    assert signed.checkpoint.size == 17
    (log_paths.directory / "checkpoint.cosigned").unlink()  # a client that lost its state
    assert submit_checkpoint(url, log_paths, log_key).checkpoint.size == 17  # learns via 409


def _signer(log_paths: LogPaths) -> NoteSigner:
    return NoteSigner(ORIGIN, load_private_key(log_paths.directory / KEY_FILE))


def test_rollback_to_a_smaller_tree_is_refused(witness: Witness, log_paths: LogPaths) -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(20)]
    signer = _signer(log_paths)
    big = sign_checkpoint(Checkpoint(ORIGIN, 20, root_of(leaves)), signer)
    witness.add_checkpoint(format_request(0, [], big))
    small = sign_checkpoint(Checkpoint(ORIGIN, 8, root_of(leaves[:8])), signer)
    with pytest.raises(WitnessRefusedError) as err:
        witness.add_checkpoint(format_request(20, [], small))
    assert err.value.status == 400
    with pytest.raises(WitnessRefusedError) as err:
        witness.add_checkpoint(format_request(0, [], small))
    assert err.value.status == 409 and err.value.witness_size == 20
    assert witness.latest(ORIGIN) is not None and witness.latest(ORIGIN).size == 20  # type: ignore[union-attr]


def test_fork_at_the_same_size_is_refused(witness: Witness, log_paths: LogPaths) -> None:
    signer = _signer(log_paths)
    leaves = [leaf_hash(bytes([i])) for i in range(9)]
    witness.add_checkpoint(
        format_request(0, [], sign_checkpoint(Checkpoint(ORIGIN, 9, root_of(leaves)), signer))
    )
    forked = [*leaves[:8], leaf_hash(b"rewritten")]
    note = sign_checkpoint(Checkpoint(ORIGIN, 9, root_of(forked)), signer)
    with pytest.raises(WitnessRefusedError) as err:
        witness.add_checkpoint(format_request(9, [], note))
    assert err.value.status == 409


def test_forked_history_is_refused_even_with_a_wellformed_proof(
    witness: Witness, log_paths: LogPaths
) -> None:
    signer = _signer(log_paths)
    leaves = [leaf_hash(bytes([i])) for i in range(12)]
    witness.add_checkpoint(
        format_request(0, [], sign_checkpoint(Checkpoint(ORIGIN, 12, root_of(leaves)), signer))
    )
    forked = [*leaves[:5], leaf_hash(b"rewritten"), *leaves[6:], leaf_hash(b"more")]
    note = sign_checkpoint(Checkpoint(ORIGIN, 13, root_of(forked)), signer)
    with pytest.raises(WitnessRefusedError) as err:
        witness.add_checkpoint(format_request(12, consistency_proof(12, 13, forked), note))
    assert err.value.status == 422
    assert witness.latest(ORIGIN).size == 12  # type: ignore[union-attr]


def test_checkpoint_signed_by_an_unknown_key_is_refused(witness: Witness) -> None:
    forger = NoteSigner.generate(ORIGIN)
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, leaf_hash(b"x")), forger)
    with pytest.raises(WitnessRefusedError) as err:
        witness.add_checkpoint(format_request(0, [], note))
    assert err.value.status == 403


def test_unknown_origin_is_refused(witness: Witness) -> None:
    other = NoteSigner.generate("other.example/log")
    note = sign_checkpoint(Checkpoint("other.example/log", 1, leaf_hash(b"x")), other)
    with pytest.raises(WitnessRefusedError) as err:
        witness.add_checkpoint(format_request(0, [], note))
    assert err.value.status == 404


def test_state_survives_a_witness_restart(
    tmp_path: Path, witness: Witness, log_paths: LogPaths, log_key: VerifierKey
) -> None:
    note = log_paths.checkpoint.read_text()
    witness.add_checkpoint(format_request(0, [], note))
    again = Witness(witness.state_dir, witness.cosigner, [log_key], clock=NOW)
    try:
        assert again.latest(ORIGIN) == witness.latest(ORIGIN)
    finally:
        again.close()


def test_submit_detects_a_log_rolled_back_below_the_witness(
    url: str, witness: Witness, log_paths: LogPaths, log_key: VerifierKey
) -> None:
    submit_checkpoint(url, log_paths, log_key)
    signer = _signer(log_paths)
    leaves = [leaf_hash(bytes([i])) for i in range(4)]
    log_paths.checkpoint.write_text(sign_checkpoint(Checkpoint(ORIGIN, 4, root_of(leaves)), signer))
    (log_paths.directory / "checkpoint.cosigned").unlink()
    with pytest.raises(WitnessRefusedError, match="rollback"):
        submit_checkpoint(url, log_paths, log_key)


def test_rewrite_resigned_with_the_hosts_own_key_fails_against_the_witnessed_checkpoint(
    url: str, witness: Witness, log_paths: LogPaths, log_key: VerifierKey
) -> None:
    submit_checkpoint(url, log_paths, log_key, witness.cosigner.verifier)
    # An intruder with root on the log host: drops entry 3, rebuilds the index, re-signs.
    entries = [json.loads(x) for x in entry_lines(log_paths)]
    del entries[3]
    for i, e in enumerate(entries):
        e["seq"] = i
    lines = [canonical_json(e) + b"\n" for e in entries]
    rewrite_consistently(log_paths, lines)
    leaves = [hashlib.sha256(b"\x00" + x[:-1]).digest() for x in lines]
    resigned = sign_checkpoint(Checkpoint(ORIGIN, len(leaves), root_of(leaves)), _signer(log_paths))
    log_paths.checkpoint.write_text(resigned)
    with pytest.raises(LogCorruptedError, match="witnessed"):
        verify_log(
            log_paths.directory, log_key, witness_keys=[witness.cosigner.verifier], min_cosigners=1
        )
    # ... and the witness refuses to cosign the rewritten history.
    (log_paths.directory / "checkpoint.cosigned").unlink()
    with pytest.raises(WitnessRefusedError):
        submit_checkpoint(url, log_paths, log_key)
