"""`edge.anomaly`: when a window raises an anomaly event (score episodes, health level rises)."""

from __future__ import annotations

import pytest

from edge.alarm_levels import AlarmLevel
from edge.anomaly import AnomalyReason, AnomalyTracker

NONE, ADVISORY, ALARM = AlarmLevel.NONE, AlarmLevel.ADVISORY, AlarmLevel.ALARM


def test_a_persisting_high_score_is_raised_again_only_after_the_realarm_interval() -> None:
    t = AnomalyTracker(threshold=1.0, realarm_interval_s=60.0)
    raised = [t.observe(5.0, float(now)).found for now in range(0, 130, 10)]
    assert [i * 10 for i, r in enumerate(raised) if r] == [0, 60, 120]
    assert all(r in ((), (AnomalyReason.SCORE,)) for r in raised)


def test_a_score_back_at_the_threshold_ends_the_episode_and_the_next_crossing_is_raised() -> None:
    t = AnomalyTracker(threshold=1.0, realarm_interval_s=60.0)
    assert t.observe(2.0, 0.0).reasons == ("score",)
    assert t.observe(1.0, 1.0).reasons == ()  # at the threshold is not over it
    assert t.observe(2.0, 2.0).reasons == ("score",)  # a new episode, not a re-alarm


def test_each_rise_of_the_health_level_is_raised_once_and_a_fall_never() -> None:
    t = AnomalyTracker(threshold=1.0, realarm_interval_s=60.0)
    steps = [
        (NONE, NONE),
        (NONE, ADVISORY),
        (ADVISORY, ADVISORY),
        (ADVISORY, ALARM),
        (ALARM, ADVISORY),
    ]
    got = [t.observe(0.0, float(i), before=b, after=a).reasons for i, (b, a) in enumerate(steps)]
    assert got == [(), ("alarm_level",), (), ("alarm_level",), ()]


def test_a_rise_and_a_crossing_in_one_window_make_one_event_with_both_reasons() -> None:
    t = AnomalyTracker(threshold=1.0, realarm_interval_s=60.0)
    assert t.observe(3.0, 0.0, before=NONE, after=ALARM).reasons == ("alarm_level", "score")


def test_a_verdict_cannot_be_read_as_a_boolean() -> None:
    verdict = AnomalyTracker(threshold=1.0, realarm_interval_s=60.0).observe(0.0, 0.0)
    with pytest.raises(TypeError):
        bool(verdict)
