"""tlog-proof export: verifies offline with only the log's verifier key; any edit fails."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from audit.errors import AuditError, CheckpointError, ProofError
from audit.keys import KEY_FILE, load_private_key, read_vkey
from audit.note import NoteSigner
from audit.proof import build_proof, verify_proof
from audit.storage import LogPaths
from tests.audit.conftest import ORIGIN, fill


@pytest.fixture
def paths(log_dir: Path) -> LogPaths:
    fill(log_dir, 13)
    return LogPaths(log_dir)


def test_exported_proof_verifies_without_the_log(paths: LogPaths) -> None:
    key = read_vkey(paths.directory / "checkpoint.vkey")
    text = build_proof(paths, 6, checkpoint_note=paths.checkpoint.read_text())
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra ")
    verified = verify_proof(text, key)
    assert verified.index == 6 and b'"seq":6' in verified.entry
    assert verified.checkpoint.checkpoint.size == 13


def test_proof_for_an_older_size_is_signed_for_that_prefix(paths: LogPaths) -> None:
    signer = NoteSigner(ORIGIN, load_private_key(paths.directory / KEY_FILE))
    text = build_proof(paths, 2, checkpoint_note="", size=5, signer=signer)
    assert verify_proof(text, signer.verifier).checkpoint.checkpoint.size == 5


def test_proof_with_a_substituted_entry_fails(paths: LogPaths) -> None:
    key = read_vkey(paths.directory / "checkpoint.vkey")
    text = build_proof(paths, 6, checkpoint_note=paths.checkpoint.read_text())
    verified = verify_proof(text, key)
    forged = verified.entry.replace(b'"seq":6', b'"seq":7')
    with pytest.raises(ProofError):
        verify_proof(text, key, entry=forged)
    swapped = text.replace(
        base64.b64encode(verified.entry).decode(), base64.b64encode(forged).decode()
    )
    with pytest.raises(ProofError):
        verify_proof(swapped, key)


def test_proof_with_a_moved_index_fails(paths: LogPaths) -> None:
    key = read_vkey(paths.directory / "checkpoint.vkey")
    text = build_proof(paths, 6, checkpoint_note=paths.checkpoint.read_text())
    with pytest.raises(ProofError):
        verify_proof(text.replace("\nindex 6\n", "\nindex 7\n"), key)


def test_proof_under_a_checkpoint_from_another_key_fails(paths: LogPaths) -> None:
    text = build_proof(paths, 1, checkpoint_note=paths.checkpoint.read_text())
    with pytest.raises(CheckpointError):
        verify_proof(text, NoteSigner.generate(ORIGIN).verifier)


def test_index_beyond_the_checkpoint_has_no_proof(paths: LogPaths) -> None:
    with pytest.raises(AuditError):
        build_proof(paths, 13, checkpoint_note=paths.checkpoint.read_text())
