"""Alarm levels on the health indicator: none, advisory, alarm; with persistence and hysteresis.

A level is entered when at least ``persist_of`` of the last ``persist_window`` windows are at or
above it (by default three in a row: one spike does not raise it), and left only after ``clear_windows`` consecutive windows below it by ``hysteresis``
(so an alarm does not flap while the level hovers at the boundary: an operator who sees an alarm
come and go nineteen times learns to ignore it). Levels are log ratios over the machine's
commissioning baseline: log(2) is "twice the vibration it had when new" (+6 dB).

>>> s = AlarmState(AlarmLevels())
>>> [s.update(r).value for r in (0.0, 0.8, 0.8, 0.8, 0.0)]
['none', 'none', 'none', 'alarm', 'alarm']
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from edge.errors import ConfigError


class AlarmLevel(enum.Enum):
    NONE = "none"
    ADVISORY = "advisory"
    ALARM = "alarm"

    @property
    def rank(self) -> int:
        """0 for none, 1 for advisory, 2 for alarm: a rise is a higher rank."""
        return _ORDER.index(self)


_ORDER = (AlarmLevel.NONE, AlarmLevel.ADVISORY, AlarmLevel.ALARM)


@dataclass(frozen=True, slots=True)
class AlarmLevels:
    """Thresholds in log ratio over the baseline, and the persistence/hysteresis rules."""

    advisory_level: float = math.log(1.6)  # +4 dB
    alarm_level: float = math.log(2.0)  # +6 dB
    persist_window: int = 3  # 3 of 3: three windows in a row, the classic level check's rule
    persist_of: int = 3
    hysteresis: float = math.log(1.25)  # leave a level only 2 dB below it
    clear_windows: int = 30  # five minutes at one window per 10 s

    def __post_init__(self) -> None:
        if not 0 < self.advisory_level <= self.alarm_level:
            raise ConfigError(
                f"need 0 < advisory_level <= alarm_level; found {self.advisory_level}, "
                f"{self.alarm_level}"
            )
        if not 1 <= self.persist_of <= self.persist_window:
            raise ConfigError("need 1 <= persist_of <= persist_window")
        if self.hysteresis < 0 or self.clear_windows < 1:
            raise ConfigError("need hysteresis >= 0 and clear_windows >= 1")

    def threshold(self, level: AlarmLevel) -> float:
        return self.alarm_level if level is AlarmLevel.ALARM else self.advisory_level


class AlarmState:
    """The alarm level of one machine, window by window."""

    def __init__(self, levels: AlarmLevels) -> None:
        self.levels = levels
        self.level = AlarmLevel.NONE
        self._recent: deque[float] = deque(maxlen=levels.persist_window)
        self._below = 0
        self.onsets = {AlarmLevel.ADVISORY: 0, AlarmLevel.ALARM: 0}

    def update(self, raw: float) -> AlarmLevel:
        """Feed one window's indicator; returns the level in force after it."""
        lv = self.levels
        self._recent.append(raw)
        entered = AlarmLevel.NONE
        for candidate in (AlarmLevel.ALARM, AlarmLevel.ADVISORY):
            above = sum(1 for r in self._recent if r >= lv.threshold(candidate))
            if above >= lv.persist_of:
                entered = candidate
                break
        if entered.rank > self.level.rank:
            for step in _ORDER[self.level.rank + 1 : entered.rank + 1]:
                self.onsets[step] += 1
            self.level, self._below = entered, 0
        elif self.level is not AlarmLevel.NONE:
            if raw < lv.threshold(self.level) - lv.hysteresis:
                self._below += 1
                if self._below >= lv.clear_windows:
                    self.level, self._below = _ORDER[self.level.rank - 1], 0
            else:
                self._below = 0
        return self.level
