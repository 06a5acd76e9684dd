"""Token buckets per device and topic class; time is an input."""

from __future__ import annotations

from policies import RateLimiter, ReasonCode


def test_flood_over_burst_is_refused_then_refills(policy, press) -> None:
    limiter = RateLimiter(policy)
    topic = f"{press.path}/status"  # 1 msg/s, burst 10
    results = [limiter.admit(press, topic, now=100.0) for _ in range(11)]
    assert all(r.allowed for r in results[:10])
    assert results[10].reason_code is ReasonCode.RATE_LIMITED
    assert not limiter.admit(press, topic, now=100.5).allowed
    assert limiter.admit(press, topic, now=101.0).allowed


def test_devices_and_topic_classes_have_separate_buckets(policy, press, other_press) -> None:
    limiter = RateLimiter(policy)
    for _ in range(10):
        limiter.admit(press, f"{press.path}/status", now=0.0)
    assert not limiter.admit(press, f"{press.path}/status", now=0.0).allowed
    assert limiter.admit(other_press, f"{other_press.path}/status", now=0.0).allowed
    assert limiter.admit(press, f"{press.path}/telemetry", now=0.0).allowed


def test_clock_stepping_backwards_adds_no_tokens(policy, press) -> None:
    limiter = RateLimiter(policy)
    topic = f"{press.path}/status"
    for _ in range(10):
        limiter.admit(press, topic, now=1000.0)
    assert not limiter.admit(press, topic, now=0.0).allowed
    assert not limiter.admit(press, topic, now=1000.5).allowed


def test_unknown_topic_class_and_foreign_path_are_refused(policy, press, other_press) -> None:
    limiter = RateLimiter(policy)
    assert limiter.admit(press, f"{press.path}/video", now=0).reason_code is ReasonCode.NO_LIMITS
    outside = limiter.admit(press, f"{other_press.path}/status", now=0)
    assert outside.reason_code is ReasonCode.TOPIC_OUTSIDE_IDENTITY


def test_bucket_table_stays_bounded(policy, press) -> None:
    from pki.identity import DeviceIdentity

    limiter = RateLimiter(policy, max_buckets=50)
    for i in range(500):
        d = DeviceIdentity.parse(f"acme/plant1/stamping/line1/cell1/d{i}")
        assert limiter.admit(d, f"{d.path}/status", now=float(i)).allowed
    assert len(limiter._buckets) <= 50
