"""Limits and settings of the provisioning service, as frozen values with units in their names.

`idmz` builds these from the command line; the service never reads files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from provisioning.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TokenLimits:
    enrollment_ttl_s: int = 15 * 60  # default lifetime of a one-time enrollment token
    max_enrollment_ttl_s: int = 7 * 24 * 3600  # an operator may stage tokens for a week at most
    operator_ttl_s: int = 8 * 3600  # one shift
    max_operator_ttl_s: int = 30 * 24 * 3600
    clock_leeway_s: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.enrollment_ttl_s <= self.max_enrollment_ttl_s:
            raise ConfigError("need 0 < enrollment_ttl_s <= max_enrollment_ttl_s")
        if not 0 < self.operator_ttl_s <= self.max_operator_ttl_s:
            raise ConfigError("need 0 < operator_ttl_s <= max_operator_ttl_s")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Token buckets: ``*_per_s`` refill rate, ``*_burst`` bucket size. A plant-wide power-up
    is paced with 429 + Retry-After instead of failing."""

    per_client_per_s: float = 50.0
    per_client_burst: int = 200
    per_token_per_s: float = 0.5  # a token is single-use; retries with it are paced hard
    per_token_burst: int = 5
    max_tracked_keys: int = 100_000

    def __post_init__(self) -> None:
        if min(self.per_client_per_s, self.per_token_per_s) <= 0:
            raise ConfigError("rate limits must be > 0 per second")
        if min(self.per_client_burst, self.per_token_burst) < 1:
            raise ConfigError("rate-limit bursts must be >= 1")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one connection may cost before and while the app reads a request (ADR 0046)."""

    max_body_bytes: int = 64 * 1024  # a CSR is < 16 KiB (pki.csr.MAX_CSR_BYTES); JSON adds little
    max_header_bytes: int = 16 * 1024  # request line + header lines; beyond: 431 and close
    header_timeout_s: float = 10.0  # connection (or first byte) to end of headers; then 408
    body_timeout_s: float = 60.0  # end of headers to end of body
    max_connections: int = 4096  # open at once; the next one is answered 429 and closed
    busy_retry_after_s: int = 2  # the Retry-After of that 429 (the client adds jitter)

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_header_bytes, self.max_connections) < 1:
            raise ConfigError("HTTP byte and connection limits must be >= 1")
        if min(self.header_timeout_s, self.body_timeout_s) <= 0:
            raise ConfigError("HTTP timeouts must be > 0 seconds")


@dataclass(frozen=True, slots=True)
class SheddingLimits:
    """Enrollments and renewals inside one service process at once; past it, 429 with an
    appointment in ``Retry-After`` (`provisioning.shedding`, ADR 0137)."""

    max_in_flight: int = 128
    initial_rate_per_s: float = 100.0  # the completion rate assumed until one is measured
    min_rate_per_s: float = 20.0
    max_retry_after_s: int = 120

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.max_retry_after_s < 1:
            raise ConfigError("max_in_flight and max_retry_after_s must be >= 1")
        if min(self.initial_rate_per_s, self.min_rate_per_s) <= 0:
            raise ConfigError("shedding rates must be > 0 per second")


@dataclass(frozen=True, slots=True)
class ExpiryPolicy:
    alert_days: tuple[int, ...] = (30, 14, 7, 1)
    scan_interval_s: int = 3600

    def __post_init__(self) -> None:
        if not self.alert_days or any(d <= 0 for d in self.alert_days):
            raise ConfigError("expiry alert thresholds must be positive day counts")


@dataclass(frozen=True, slots=True)
class RenewalPolicy:
    """What happens to a certificate once its successor is active (ADR 0047).

    ``superseded_grace_s``: how long the superseded certificate stays valid for the gateway to
    switch over (reload its files and reconnect); then it is revoked with reason
    ``superseded``. 0 revokes it as soon as the successor is active. ``sweep_batch`` bounds how
    many overdue certificates one sweep revokes (each regenerates the CRL)."""

    superseded_grace_s: int = 15 * 60
    max_superseded_grace_s: int = 24 * 3600
    sweep_batch: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.superseded_grace_s <= self.max_superseded_grace_s:
            raise ConfigError(
                f"the superseded-certificate grace must be 0..{self.max_superseded_grace_s} s; "
                f"found {self.superseded_grace_s}"
            )
        if self.sweep_batch < 1:
            raise ConfigError("sweep_batch must be >= 1")


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    tokens: TokenLimits = field(default_factory=TokenLimits)
    rates: RateLimits = field(default_factory=RateLimits)
    http: HttpLimits = field(default_factory=HttpLimits)
    shedding: SheddingLimits = field(default_factory=SheddingLimits)
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    renewal: RenewalPolicy = field(default_factory=RenewalPolicy)


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"15m"``, ``"8h"``, ``"30d"`` (one number, one unit)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    raw = text.strip().lower()
    if len(raw) < 2 or raw[-1] not in units or not raw[:-1].isdigit():
        raise ConfigError(f"expected a duration like 90s, 15m, 8h or 30d; found {text!r}")
    seconds = int(raw[:-1]) * units[raw[-1]]
    if seconds <= 0:
        raise ConfigError(f"a duration must be positive; found {text!r}")
    return timedelta(seconds=seconds)
