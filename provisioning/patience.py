"""Patience with a busy provisioning service (ADR 0137): the gateway side of load shedding.

A plant-wide power-up brings thousands of gateways to the service at once; it admits what it
can and answers the rest 429 with ``Retry-After`` (an appointment), or refuses connections past
its cap the same way. `request_patiently` comes back when told, with jitter, within a bounded
total time; `provisioning.client` sends every request of ``idmz enroll`` and ``idmz renew``
through it.

>>> import random
>>> Patience(rng=random.Random(1)).delay_s("4", attempt=1)  # 4 s plus 0-50 % jitter
4.268...
>>> Patience(rng=random.Random(1)).delay_s(None, attempt=3)  # no hint: 1 s doubled twice
4.268...
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from provisioning.errors import UpstreamError

_log = logging.getLogger("provisioning.client")


@dataclass(frozen=True, slots=True)
class Retry:
    """One wait before trying again: what the service said (a status, or the connection
    error), the wait chosen, the attempt that is coming."""

    status: int | None
    error: str | None
    delay_s: float
    attempt: int


@dataclass(frozen=True)
class Patience:
    """How long the client keeps coming back when the service is busy (ADR 0137): 429 or 503
    with ``Retry-After`` (the wait the service gave, plus 0-50 % jitter, so that a plant's
    gateways spread out), or a connection that could not be made (exponential back-off from
    ``backoff_s``, jittered the same way). One wait is at most ``max_wait_s``; after
    ``total_s`` in all the client gives up with an `UpstreamError` (an enrollment token lives
    15 minutes by default). A request that reached the service and failed otherwise is not
    retried: its token may be spent. ``on_retry`` observes each wait."""

    total_s: float = 600.0
    max_wait_s: float = 120.0
    backoff_s: float = 1.0
    on_retry: Callable[[Retry], None] | None = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def delay_s(self, retry_after: str | None, attempt: int) -> float:
        """The wait before attempt ``attempt + 1`` (``attempt`` >= 1 failed so far)."""
        base = self.backoff_s * 2.0 ** min(attempt - 1, 8)
        if retry_after is not None and retry_after.strip().isdigit():
            base = float(retry_after.strip())
        return min(self.max_wait_s, base) * (1.0 + self.rng.random() / 2)


_BUSY = (429, 503)
_UNREACHED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def request_patiently(
    http: httpx.Client, method: str, url: str, patience: Patience, **kwargs: Any
) -> httpx.Response:
    """``http.request`` until the answer is not "busy" (429/503) and the connection was made,
    honouring ``Retry-After`` with jitter, within ``patience``."""
    deadline = patience.monotonic() + patience.total_s
    attempt = 0
    while True:
        status: int | None = None
        try:
            response = http.request(method, url, **kwargs)
        except _UNREACHED as exc:
            error: str | None = f"{type(exc).__name__}: {exc}"
            hint = None
        else:
            if response.status_code not in _BUSY:
                return response
            status, error = response.status_code, None
            hint = response.headers.get("retry-after")
        attempt += 1
        delay = patience.delay_s(hint, attempt)
        if patience.monotonic() + delay > deadline:
            said = f"answered {status}" if status is not None else f"could not be reached ({error})"
            raise UpstreamError(
                f"{url} {said}; gave up after {attempt} attempts in {patience.total_s:.0f} s"
            )
        if patience.on_retry is not None:
            patience.on_retry(Retry(status, error, delay, attempt + 1))
        _log.info("%s is busy (%s); trying again in %.1f s", url, status or error, delay)
        patience.sleep(delay)


__all__ = ["Patience", "Retry", "request_patiently"]
