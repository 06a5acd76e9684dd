"""Load shedding for a plant-wide power-up (ADR 0137): at most ``max_in_flight`` enrollments and
renewals are inside one service process at once; the next one is answered 429 with a
``Retry-After`` that gives it an appointment instead of a retry storm.

The appointments are a virtual queue: the gate estimates the rate at which it completes
requests and hands each refused request the next free slot, one ``1/rate`` apart, after the
requests already inside have drained. Five thousand gateways refused in the same second come
back spread over the time the service needs for them, mostly once each, instead of all
retrying every second. ``Retry-After`` is whole seconds (RFC 9110); the client adds jitter.

Time comes in as ``now_s`` (monotonic seconds); the gate is called from the event loop.

>>> gate = EnrollmentGate(max_in_flight=1, initial_rate_per_s=10.0)
>>> gate.enter(now_s=0.0)
>>> try:
...     gate.enter(now_s=0.0)
... except RateLimitedError as exc:
...     print(exc.retry_after_s)
1
"""

from __future__ import annotations

import math
import threading

from provisioning.errors import ConfigError, RateLimitedError

_RATE_WINDOW_S = 2.0  # completions are counted over windows this long
_SMOOTHING = 0.5  # weight of the newest window in the rate estimate


class EnrollmentGate:
    def __init__(
        self,
        *,
        max_in_flight: int,
        min_rate_per_s: float = 20.0,
        initial_rate_per_s: float = 100.0,
        max_retry_after_s: int = 120,
    ) -> None:
        if max_in_flight < 1 or min_rate_per_s <= 0 or max_retry_after_s < 1:
            raise ConfigError("the enrollment gate needs max_in_flight, a rate and a cap >= 1")
        self._max = max_in_flight
        self._min_rate = min_rate_per_s
        self._max_retry = max_retry_after_s
        self._lock = threading.Lock()
        self._in_flight = 0
        self._rate = max(min_rate_per_s, initial_rate_per_s)  # until a window has been measured
        self._window_start = 0.0
        self._window_done = 0
        self._next_slot = 0.0
        self.shed = 0  # requests answered 429 by this gate

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self, *, now_s: float) -> None:
        """Admit one request or raise `RateLimitedError` with its appointment."""
        with self._lock:
            if self._in_flight < self._max:
                if self._in_flight == 0:  # busy again: idle time is not counted in the rate
                    self._window_start, self._window_done = now_s, 0
                self._in_flight += 1
                return
            self.shed += 1
            drained = now_s + self._in_flight / self._rate  # when those inside are done
            slot = max(self._next_slot, drained)
            self._next_slot = slot + 1.0 / self._rate
            wait = min(self._max_retry, max(1, math.ceil(slot - now_s)))
        raise RateLimitedError("the service is at its enrollment capacity", retry_after_s=wait)

    def leave(self, *, now_s: float) -> None:
        """One admitted request finished (whatever its outcome)."""
        with self._lock:
            self._in_flight -= 1
            self._window_done += 1
            elapsed = now_s - self._window_start
            if elapsed >= _RATE_WINDOW_S:
                measured = self._window_done / elapsed
                blended = _SMOOTHING * measured + (1 - _SMOOTHING) * self._rate
                self._rate = max(self._min_rate, blended)
                self._window_start, self._window_done = now_s, 0


__all__ = ["EnrollmentGate"]
