"""Limits and capacity thresholds: inputs to the log, never globals (the clock is `bedrock.clock`).

Capacity follows auditd's three stages (auditd.conf ``space_left`` / ``admin_space_left`` /
``disk_full``): below ``space_left_bytes`` of headroom the log warns (logged and reported to
the ``on_capacity`` callback) and keeps recording; below ``admin_space_left_bytes`` it refuses
to record (`AuditUnavailableError`) so that the actions that need a record are refused while
there is still room for operators to act. Headroom is the smaller of the filesystem's free
bytes and, if ``max_log_bytes`` is set, the bytes left before the log reaches that size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from audit.errors import AuditConfigError

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AuditLimits:
    max_entry_bytes: int = 16 * 1024  # fits a tlog-tiles entry bundle (uint16 length)
    max_batch_entries: int = 1024  # entries written under one fsync
    checkpoint_every_entries: int = 1000
    checkpoint_interval_s: float = 10.0
    space_left_bytes: int = 256 * MiB  # warn below this headroom
    admin_space_left_bytes: int = 32 * MiB  # refuse to record below this headroom
    max_log_bytes: int | None = None  # optional cap on the log's own size

    def __post_init__(self) -> None:
        if self.max_entry_bytes < 256 or self.max_entry_bytes > 65535:
            raise AuditConfigError("max_entry_bytes must be between 256 and 65535")
        if self.max_batch_entries < 1 or self.checkpoint_every_entries < 1:
            raise AuditConfigError("max_batch_entries and checkpoint_every_entries must be >= 1")
        if self.checkpoint_interval_s <= 0:
            raise AuditConfigError("checkpoint_interval_s must be > 0")
        if not 0 <= self.admin_space_left_bytes <= self.space_left_bytes:
            raise AuditConfigError("need 0 <= admin_space_left_bytes <= space_left_bytes")


class CapacityState(StrEnum):
    OK = "ok"
    SPACE_LEFT = "space_left"  # warning: act now (rotate/archive/extend the disk)
    ADMIN_SPACE_LEFT = "admin_space_left"  # refusing to record


@dataclass(frozen=True, slots=True)
class CapacityReport:
    state: CapacityState
    headroom_bytes: int
    log_bytes: int
    message: str


def assess_capacity(
    limits: AuditLimits, directory: Path, log_bytes: int, batch_bytes: int
) -> CapacityReport:
    """Where the log stands after writing ``batch_bytes`` more (statvfs on the log's disk)."""
    st = os.statvfs(directory)
    headroom = st.f_bavail * st.f_frsize
    if limits.max_log_bytes is not None:
        headroom = min(headroom, limits.max_log_bytes - log_bytes)
    after = headroom - batch_bytes
    if after < limits.admin_space_left_bytes:
        state = CapacityState.ADMIN_SPACE_LEFT
    elif after < limits.space_left_bytes:
        state = CapacityState.SPACE_LEFT
    else:
        state = CapacityState.OK
    message = (
        f"audit log capacity {state.value}: {headroom} bytes of headroom "
        f"(warn below {limits.space_left_bytes}, refuse below {limits.admin_space_left_bytes})"
    )
    return CapacityReport(state, headroom, log_bytes, message)
