"""When a vibration channel raises an anomaly event: the model's score and the health alarm level.

Two reasons, one event per window at most:

* ``score``: the model's score went over its threshold. Raised when it crosses, then again every
  ``realarm_interval_s`` while it stays over (a persisting fault is not forgotten, and not
  repeated every window); a window at or under the threshold ends the episode.
* ``alarm_level``: the health alarm level rose (none -> advisory -> alarm). Its persistence and
  hysteresis are `edge.alarm_levels`' (this module only compares the level before and after).

>>> t = AnomalyTracker(threshold=1.0, realarm_interval_s=60.0)
>>> [t.observe(s, now).reasons for s, now in ((2.0, 0.0), (2.0, 30.0), (2.0, 60.0))]
[('score',), (), ('score',)]
>>> t.observe(0.5, 61.0, before=AlarmLevel.NONE, after=AlarmLevel.ADVISORY).reasons
('alarm_level',)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edge.alarm_levels import AlarmLevel


class AnomalyReason(enum.Enum):
    ALARM_LEVEL = "alarm_level"
    SCORE = "score"


@dataclass(frozen=True, slots=True)
class AnomalyVerdict:
    """What one window decided: the reasons to raise an event (none: no event)."""

    found: tuple[AnomalyReason, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reasons as the anomaly message carries them."""
        return tuple(r.value for r in self.found)

    def __bool__(self) -> bool:
        raise TypeError("an AnomalyVerdict is not a boolean; test .found")


class AnomalyTracker:
    """The anomaly state of one channel: is a score episode in progress, when was it raised."""

    def __init__(self, threshold: float, realarm_interval_s: float) -> None:
        self.threshold = threshold
        self.realarm_interval_s = realarm_interval_s
        self.in_anomaly = False
        self.last_raised_ts = 0.0

    def observe(
        self,
        score: float,
        now: float,
        *,
        before: AlarmLevel = AlarmLevel.NONE,
        after: AlarmLevel = AlarmLevel.NONE,
    ) -> AnomalyVerdict:
        """One window's score at ``now`` (POSIX s), and the health alarm level before and after it."""
        found = [AnomalyReason.ALARM_LEVEL] if after.rank > before.rank else []
        if score <= self.threshold:
            self.in_anomaly = False
        elif not self.in_anomaly or now - self.last_raised_ts >= self.realarm_interval_s:
            self.in_anomaly, self.last_raised_ts = True, now
            found.append(AnomalyReason.SCORE)
        return AnomalyVerdict(tuple(found))
