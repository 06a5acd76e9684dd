"""Keyed token buckets for the HTTP edge: per client address and per bearer token.

A refused request learns when a token will be available (``Retry-After``), so a plant-wide
power-up of hundreds of gateways spreads itself out instead of failing. Time comes in as
``now_s`` (monotonic seconds); the bucket table is bounded and sheds idle keys first.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

from provisioning.errors import RateLimitedError


class KeyedRateLimiter:
    def __init__(
        self, *, rate_per_s: float, burst: int, max_keys: int = 100_000, what: str = "client"
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._max_keys = max_keys
        self._what = what
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def admit(self, key: str, *, now_s: float) -> None:
        """Take one token for ``key`` or raise `RateLimitedError` with ``retry_after_s``."""
        with self._lock:
            tokens, at = self._buckets.pop(key, (self._burst, now_s))
            tokens = min(self._burst, tokens + max(0.0, now_s - at) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now_s)
                while len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)  # least recently seen
                return
            self._buckets[key] = (tokens, now_s)
        retry = max(1, math.ceil((1.0 - tokens) / self._rate))
        raise RateLimitedError(f"{self._what} rate limit exceeded", retry_after_s=retry)
