"""Shared fixtures: a fresh log directory, a known origin, events that look like real ones."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.events import AuditEvent, Outcome
from audit.limits import AuditLimits
from audit.log import AuditLog
from audit.storage import LogPaths, pack_record

ORIGIN = "plant1.example/idmz-audit"
DEVICE = "acme/plant1/press/line1/cell2/press-07"


def refused(n: int = 0) -> AuditEvent:
    return AuditEvent(
        actor=DEVICE,
        action="relay.message.refused",
        resource=f"{DEVICE}/telemetry",
        outcome=Outcome.DENIED,
        reason="payload larger than max_message_bytes",
        details={"n": n},
    )


def fill(directory: Path, count: int, **kwargs: object) -> None:
    with AuditLog.open(directory, origin=ORIGIN, **kwargs) as log:  # type: ignore[arg-type]
        for i in range(count):
            log.record(refused(i))


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def audit_log(log_dir: Path) -> Iterator[AuditLog]:
    log = AuditLog.open(log_dir, origin=ORIGIN, limits=AuditLimits(space_left_bytes=0,
                        admin_space_left_bytes=0))  # fmt: skip
    yield log
    log.close()


def entry_lines(paths: LogPaths) -> list[bytes]:
    return paths.entries.read_bytes().splitlines(keepends=True)


def rewrite_consistently(paths: LogPaths, lines: list[bytes]) -> None:
    """What a careful attacker does: rewrite entries AND a matching index."""
    paths.entries.write_bytes(b"".join(lines))
    end, records = 0, []
    for line in lines:
        end += len(line)
        records.append(pack_record(end, hashlib.sha256(b"\x00" + line[:-1]).digest()))
    paths.index.write_bytes(b"".join(records))
