"""Frozen settings of the southbound sources (built by the `idmz` config loader)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between reconnect attempts, capped, with +-20 % jitter."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, attempt: int, jitter: float) -> float:
        """Delay before attempt `attempt` (0-based); `jitter` in [-1, 1]."""
        base = min(self.max_s, self.initial_s * (2.0 ** min(attempt, 30)))
        return max(0.0, base * (1.0 + 0.2 * jitter))


SECURITY_POLICIES = ("Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss")
SECURITY_MODES = ("Sign", "SignAndEncrypt")


@dataclass(frozen=True, slots=True)
class OpcUaSecurity:
    """OPC UA secure channel (OPC 10000-4 section 5.5, 10000-7 security policies). The server's
    certificate is pinned: the channel is built only with that certificate's key."""

    policy: str
    mode: str
    certificate: Path  # the gateway's application instance certificate (PEM)
    private_key: Path
    server_certificate: Path

    def __post_init__(self) -> None:
        if self.policy not in SECURITY_POLICIES:
            raise ConfigError(
                f"OPC UA security_policy must be one of {SECURITY_POLICIES}; found {self.policy!r}"
            )
        if self.mode not in SECURITY_MODES:
            raise ConfigError(
                f"OPC UA security_mode must be one of {SECURITY_MODES}; found {self.mode!r}"
            )
        for p in (self.certificate, self.private_key, self.server_certificate):
            if not p.is_file():
                raise ConfigError(f"OPC UA security: {p} does not exist")


@dataclass(frozen=True, slots=True)
class OpcUaSource:
    name: str
    endpoint: str  # opc.tcp://host:port/path
    publishing_interval_ms: float = 100.0
    queue_size: int = 50  # per monitored item: waveform blocks must not be overwritten
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 4.0
    watchdog_interval_s: float = 1.0
    backoff: Backoff = Backoff()
    security: OpcUaSecurity | None = None  # None: SecurityPolicy None (a warning per session)

    def __post_init__(self) -> None:
        if not self.endpoint.startswith("opc.tcp://"):
            raise ConfigError(
                f"OPC UA source {self.name}: endpoint must start with opc.tcp://; "
                f"found {self.endpoint!r}"
            )


@dataclass(frozen=True, slots=True)
class ModbusSource:
    name: str
    host: str
    port: int = 502
    unit_id: int = 1
    poll_interval_s: float = 1.0
    timeout_s: float = 2.0
    backoff: Backoff = Backoff()

    def __post_init__(self) -> None:
        if not 0 <= self.unit_id <= 247:
            raise ConfigError(f"Modbus source {self.name}: unit_id must be 0-247")
        if not 0 < self.port < 65536:
            raise ConfigError(f"Modbus source {self.name}: port out of range: {self.port}")
