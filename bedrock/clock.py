"""The clock as an input (ARCHITECTURE.md section 5: time is passed, never read globally).

``Clock`` is what a component that records time takes; ``SystemClock`` is the UTC wall clock
(and says whether the kernel considers it NTP-synchronized), ``FixedClock`` the one tests and
replays pass. ``utc_now`` is the plain ``Callable[[], datetime]`` form the services take.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class Clock(Protocol):
    """Where the log's timestamps come from. ``source`` is recorded in every entry."""

    def now(self) -> datetime: ...

    def source(self) -> str: ...


class SystemClock:
    """UTC wall clock; ``source`` says whether the kernel considers it NTP-synchronized
    (adjtimex(2): TIME_ERROR means unsynchronized), re-checked at most every 60 s."""

    _TIME_ERROR = 5

    def __init__(self) -> None:
        self._checked_at = -1e9
        self._source = "system"
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None

    def now(self) -> datetime:
        return datetime.now(UTC)

    def source(self) -> str:
        mono = time.monotonic()
        if mono - self._checked_at > 60.0:
            self._checked_at = mono
            self._source = self._probe()
        return self._source

    def _probe(self) -> str:
        if self._libc is None:
            return "system"
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        try:
            state = int(self._libc.adjtimex(buf))
        except (AttributeError, OSError):
            return "system"
        if state < 0:
            return "system"
        return "system-unsynchronized" if state == self._TIME_ERROR else "system-ntp"


@dataclass(frozen=True, slots=True)
class FixedClock:
    """A clock for tests and replays: always ``at``."""

    at: datetime
    label: str = "fixed"

    def now(self) -> datetime:
        return self.at

    def source(self) -> str:
        return self.label
