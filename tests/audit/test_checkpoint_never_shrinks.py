"""A checkpoint is never signed over a log that lost or changed signed entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.errors import LogCorruptedError
from audit.events import AuditEvent, Outcome
from audit.log import AuditLog


def _write(directory: Path, count: int) -> None:
    with AuditLog.open(directory, origin="test.example/audit", background_checkpoints=False) as log:
        for i in range(count):
            log.record(
                AuditEvent("operator:test", "operator.note", f"r{i}", Outcome.SUCCESS, "why")
            )
        log.checkpoint()


def test_reopening_a_truncated_log_refuses_to_sign_a_shorter_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    _write(directory, 5)
    checkpoint_before = (directory / "checkpoint").read_bytes()
    # An attacker drops the last entry and its index record, as a torn write would look.
    idx = directory / "entries.idx"
    idx.write_bytes(idx.read_bytes()[:-40])
    entries = directory / "entries.jsonl"
    entries.write_bytes(b"".join(entries.read_bytes().splitlines(keepends=True)[:-1]))
    with pytest.raises(LogCorruptedError, match=r"entries 4\.\.4 are missing") as info:
        AuditLog.open(directory, origin="test.example/audit", background_checkpoints=False)
    assert info.value.index == 4
    assert (directory / "checkpoint").read_bytes() == checkpoint_before  # evidence kept
