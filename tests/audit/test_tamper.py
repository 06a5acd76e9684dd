"""Tampering with a closed log is detected and the first bad index is named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.errors import LogCorruptedError
from audit.keys import read_vkey
from audit.log import AuditLog
from audit.merkle import root_of
from audit.note import NoteSigner, VerifierKey
from audit.storage import LogPaths
from audit.verify import verify_log
from tests.audit.conftest import ORIGIN, entry_lines, fill, refused, rewrite_consistently

N = 20


@pytest.fixture
def closed_log(log_dir: Path) -> tuple[LogPaths, VerifierKey]:
    fill(log_dir, N)
    return LogPaths(log_dir), read_vkey(log_dir / "checkpoint.vkey")


def _first_bad(paths: LogPaths, key: VerifierKey) -> int | None:
    with pytest.raises(LogCorruptedError) as err:
        verify_log(paths.directory, key)
    return err.value.index


def test_untouched_log_verifies(closed_log: tuple[LogPaths, VerifierKey]) -> None:
    paths, key = closed_log
    result = verify_log(paths.directory, key)
    assert result.size == N and result.unsigned_entries == 0


def test_changed_byte_fails_at_that_entry(closed_log: tuple[LogPaths, VerifierKey]) -> None:
    paths, key = closed_log
    lines = entry_lines(paths)
    offset = sum(len(x) for x in lines[:7]) + lines[7].index(b"payload")
    data = bytearray(paths.entries.read_bytes())
    data[offset] ^= 0x20
    paths.entries.write_bytes(bytes(data))
    assert _first_bad(paths, key) == 7


def test_removed_entry_fails_at_its_index(closed_log: tuple[LogPaths, VerifierKey]) -> None:
    paths, key = closed_log
    lines = entry_lines(paths)
    paths.entries.write_bytes(b"".join(lines[:5] + lines[6:]))
    assert _first_bad(paths, key) == 5


def test_removed_entry_with_rebuilt_index_fails_at_its_index(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    lines = entry_lines(paths)
    rewrite_consistently(paths, lines[:5] + lines[6:])
    assert _first_bad(paths, key) == 5


def test_reordered_entries_fail_verification_at_first_bad_index(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    lines = entry_lines(paths)
    lines[3], lines[4] = lines[4], lines[3]
    rewrite_consistently(paths, lines)
    assert _first_bad(paths, key) == 3


def test_renumbered_rewrite_is_caught_by_the_signed_checkpoint(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    entries = [json.loads(line) for line in entry_lines(paths)]
    del entries[5]
    for i, entry in enumerate(entries):
        entry["seq"] = i
    lines = [json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n" for e in entries]
    rewrite_consistently(paths, lines)
    with pytest.raises(LogCorruptedError, match=r"truncated|do not match"):
        verify_log(paths.directory, key)


def test_truncated_entries_file_fails_at_the_first_missing_entry(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    lines = entry_lines(paths)
    paths.entries.write_bytes(b"".join(lines[:15]) + lines[15][:10])
    assert _first_bad(paths, key) == 15


def test_log_truncated_consistently_below_the_checkpoint_fails(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    rewrite_consistently(paths, entry_lines(paths)[:12])
    assert _first_bad(paths, key) == 12


def test_checkpoint_signed_by_another_key_is_rejected(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    lines = entry_lines(paths)[:12]
    rewrite_consistently(paths, lines)
    forger = NoteSigner.generate(ORIGIN)
    leaves = [hashlib.sha256(b"\x00" + x[:-1]).digest() for x in lines]
    paths.checkpoint.write_text(sign_checkpoint(Checkpoint(ORIGIN, 12, root_of(leaves)), forger))
    with pytest.raises(LogCorruptedError, match="checkpoint"):
        verify_log(paths.directory, key)


def test_checkpoint_with_edited_size_fails_its_signature(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    note = paths.checkpoint.read_text()
    paths.checkpoint.write_text(note.replace(f"\n{N}\n", f"\n{N - 1}\n", 1))
    with pytest.raises(LogCorruptedError, match="checkpoint"):
        verify_log(paths.directory, key)


def test_deleted_checkpoint_fails(closed_log: tuple[LogPaths, VerifierKey]) -> None:
    paths, key = closed_log
    paths.checkpoint.unlink()
    with pytest.raises(LogCorruptedError, match="missing"):
        verify_log(paths.directory, key)


def test_torn_tail_from_an_unacknowledged_write_is_ignored_then_truncated(
    closed_log: tuple[LogPaths, VerifierKey],
) -> None:
    paths, key = closed_log
    with paths.entries.open("ab") as fh:
        fh.write(b'{"action":"half-writ')
    with paths.index.open("ab") as fh:
        fh.write(b"\x00" * 17)  # a torn index record too
    result = verify_log(paths.directory, key)
    assert result.size == N and result.torn_tail_bytes == 20
    with AuditLog.open(paths.directory, origin=ORIGIN) as log:
        assert log.record(refused()).index == N
    result = verify_log(paths.directory, key)
    assert result.size == N + 1 and result.torn_tail_bytes == 0
