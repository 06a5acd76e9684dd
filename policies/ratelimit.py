"""Per-device, per-topic-class token buckets (``max_messages_per_s`` with ``burst``).

The caller passes ``now`` (seconds from a monotonic clock), so tests and replays are exact.
A clock that steps backwards never adds tokens. Buckets of quiet devices are dropped once
there are more than ``max_buckets`` (a full bucket carries no state worth keeping).

Each relay worker holds its own limiter: with N workers sharing a subscription, each sees
about 1/N of a device's messages, so per-worker enforcement is looser by up to a factor N.

>>> limiter = RateLimiter(policy)  # doctest: +SKIP
>>> limiter.admit(device, device.path + "/telemetry", now=time.monotonic()).allowed  # doctest: +SKIP
True
"""

from __future__ import annotations

from pki.identity import DeviceIdentity
from policies.decision import Decision, ReasonCode
from policies.document import Policy

_ADMITTED = Decision.allow("within the rate limit")


class RateLimiter:
    """Token buckets keyed by topic (one per device and topic class). Not thread-safe: one
    per worker."""

    def __init__(self, policy: Policy, *, max_buckets: int = 100_000) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self._limits = {
            name: (lim.max_messages_per_s, float(lim.burst)) for name, lim in policy.limits.items()
        }
        self._max_buckets = max_buckets
        self._prefixes: dict[DeviceIdentity, str] = {}
        # topic (unique per device and topic class) -> [tokens, last refill, rate, burst]
        self._buckets: dict[str, list[float]] = {}

    def admit(self, device: DeviceIdentity, topic: str, now: float) -> Decision:
        """Take one token for ``device`` publishing on ``topic`` at time ``now``."""
        bucket = self._buckets.get(topic)
        if bucket is not None and topic.startswith(self._prefix(device)):
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(bucket[3], bucket[0] + elapsed * bucket[2])
                bucket[1] = now
        else:
            prefix = self._prefix(device)
            if not topic.startswith(prefix):
                return Decision.deny(
                    ReasonCode.TOPIC_OUTSIDE_IDENTITY, f"topic {topic!r} is outside {device}"
                )
            topic_class = topic[len(prefix) :]
            limit = self._limits.get(topic_class)
            if limit is None:
                return Decision.deny(
                    ReasonCode.NO_LIMITS, f"no limits for topic class {topic_class!r}"
                )
            if len(self._buckets) >= self._max_buckets:
                self._evict(now)
            bucket = self._buckets[topic] = [limit[1], now, limit[0], limit[1]]
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return _ADMITTED
        return Decision.deny(
            ReasonCode.RATE_LIMITED,
            f"{device} over {bucket[2]:g} msg/s (burst {bucket[3]:g}) on {topic!r}; "
            f"next token in {(1.0 - bucket[0]) / bucket[2]:.3f} s",
        )

    def _prefix(self, device: DeviceIdentity) -> str:
        prefix = self._prefixes.get(device)
        if prefix is None:
            if len(self._prefixes) >= self._max_buckets:
                self._prefixes.clear()
            prefix = self._prefixes[device] = device.topic_prefix
        return prefix

    def _evict(self, now: float) -> None:
        for key, (tokens, last, rate, burst) in list(self._buckets.items()):
            if tokens + max(0.0, now - last) * rate >= burst:
                del self._buckets[key]
        while len(self._buckets) >= self._max_buckets:  # all busy: drop the oldest
            del self._buckets[next(iter(self._buckets))]
