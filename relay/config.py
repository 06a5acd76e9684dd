"""The relay's settings as frozen objects. `idmz/relay_config.py` builds them from relay.toml;
nothing in this package reads files or the environment to find its settings.

Units are in the names (``_bytes``, ``_s``, ``_ms``, ``_per_s``). Defaults are the safe choice:
audit every refusal, acknowledge the OT side only after the data is safe, hold (not drop) on a
full spool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from relay.errors import RelayConfigError


class AcceptedAudit(StrEnum):
    """How accepted traffic is audited (refusals are always audited one record each)."""

    PER_MESSAGE = "per-message"  # one `relay.message.forwarded` record per message
    PER_BATCH = "per-batch"  # one `relay.batch.forwarded` record per commit batch: count + hash


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A client's TLS material: CA bundle that signs the broker, our certificate and key."""

    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where a broker listens and how the relay authenticates to it (mutual TLS only). The
    broker's certificate must name ``host`` (DNS or IP SAN): it is verified, never skipped."""

    host: str
    port: int
    tls: TLSFiles
    keepalive_s: int = 15

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise RelayConfigError(f"broker port must be 1-65535; found {self.port}")
        if self.keepalive_s < 5:
            raise RelayConfigError(f"keepalive_s must be at least 5; found {self.keepalive_s}")


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """Limits of one worker. Each is a bound the worker never exceeds."""

    # Messages received from OT but not yet acknowledged (MQTT 5 Receive Maximum we announce).
    max_inflight: int = 1000
    # Accepted messages are audited in batches of at most this many, or every this many ms.
    audit_batch_max: int = 512
    audit_batch_interval_ms: float = 5.0
    # The spool holds at most this many bytes on disk; above it the OT side is not acknowledged.
    spool_max_bytes: int = 512 * 1024 * 1024
    # Spooled messages go to IT at most this fast, leaving headroom for live traffic.
    drain_rate_per_s: float = 2000.0
    # A message id seen from the same device within this window is a duplicate.
    dedup_window_s: float = 24 * 3600.0
    dedup_max_ids: int = 1_000_000
    # How often the CRL file is checked for changes.
    crl_poll_interval_s: float = 0.25
    # Alarm (health degraded, error log) once the CRL's nextUpdate is closer than this.
    crl_warn_before_s: float = 12 * 3600.0
    # Messages the IT broker refused for good (or of a device revoked while spooled) are kept
    # in <state>/worker-<n>/dead-letters.jsonl up to this size; above it the alarm is raised
    # and payloads are no longer kept (the audit record still has their SHA-256).
    dead_letter_max_bytes: int = 64 * 1024 * 1024
    # Every message the IT broker acknowledged is kept this long (and at most this many bytes)
    # and re-sent when the IT broker may have lost it (ADR 0081). Keep it well above the IT
    # broker's autosave_interval (30 s for the managed one).
    it_retention_s: float = 120.0
    it_retention_max_bytes: int = 256 * 1024 * 1024
    # /health reports degraded when publishes to IT are outstanding and no PUBACK came for this
    # long (a stopped or overloaded IT broker whose TCP connection is still up).
    it_ack_deadline_s: float = 10.0

    def __post_init__(self) -> None:
        for name in (
            "max_inflight", "audit_batch_max", "spool_max_bytes", "dedup_max_ids",
            "dead_letter_max_bytes", "it_retention_max_bytes",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise RelayConfigError(f"relay limit {name} must be at least 1")
        if not 1 <= self.max_inflight <= 65535:
            raise RelayConfigError("max_inflight must be 1-65535 (MQTT 5 Receive Maximum)")
        for name in (
            "audit_batch_interval_ms",
            "drain_rate_per_s",
            "dedup_window_s",
            "crl_poll_interval_s",
            "crl_warn_before_s",
            "it_retention_s",
            "it_ack_deadline_s",
        ):
            if not getattr(self, name) > 0:
                raise RelayConfigError(f"relay limit {name} must be positive")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Everything one worker process needs. Picklable (it crosses into a spawned process)."""

    ot: BrokerEndpoint
    it: BrokerEndpoint
    policy_text: str  # the policy document (the worker loads and hashes it itself)
    policy_source: str
    state_dir: Path  # spool, dedup window, stats snapshots
    audit_dir: Path
    audit_origin: str
    crl_path: Path | None  # <home>/ca/crl.pem
    issuing_ca_path: Path | None  # to verify the CRL signature
    ledger_path: Path | None  # <home>/ca/ledger.sqlite, read to map serials to identities
    accepted_audit: AcceptedAudit = AcceptedAudit.PER_BATCH
    limits: RelayLimits = field(default_factory=RelayLimits)
    # False only for a single worker (see ADR 0052); the appliance sets it from ``workers``.
    shared_subscription: bool = True
    # The share-group secret (ADR 0034, relay.share_secret); None: <state_dir>/share-secret,
    # generated on first use. A path, never the secret: configs may be logged, it may not.
    share_secret_file: Path | None = None
    session_expiry_s: int = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class ManagedBroker:
    """A Mosquitto the appliance starts itself: where it listens and its server TLS files."""

    bind_address: str
    port: int
    cafile: Path  # CA bundle that signs the clients (issuing + root)
    certfile: Path  # the broker's server certificate
    keyfile: Path
    # Messages the broker holds per client beyond the in-flight window (the relay's backlog
    # while it is down). Mosquitto drops past it and counts the drops; the appliance raises
    # an alarm on them. Never 0 (unbounded: one stuck session could fill the memory).
    max_queued_messages: int = 100_000
    # The bound-id listener (ADR 0058) where the relay's workers connect, each with its own
    # client id <relay identity>:<suffix> checked by the broker plugin. None: no such listener;
    # then the workers use the main listener, where the client id is the certificate CN, and
    # only one worker can run.
    bound_port: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_queued_messages <= 100_000_000:
            raise RelayConfigError(
                f"max_queued_messages must be 1-100000000; found {self.max_queued_messages}"
            )


@dataclass(frozen=True, slots=True)
class ManagedBrokers:
    """Both managed brokers and what rendering their configs needs, present by construction."""

    ot: ManagedBroker
    it: ManagedBroker
    directory: Path  # rendered configs, persistence, logs
    crl_path: Path  # the CA's CRL, which both brokers check client certificates against


@dataclass(frozen=True, slots=True)
class ApplianceConfig:
    """The whole appliance: brokers (managed or external), N workers, health/metrics."""

    worker: WorkerConfig
    workers: int = 1
    managed_ot: ManagedBroker | None = None  # None: an external OT-facing broker
    managed_it: ManagedBroker | None = None
    broker_dir: Path | None = None  # rendered configs, persistence, logs
    mosquitto_path: str = "mosquitto"
    # Mosquitto started as root switches to this user (None: stay the user that runs idmz).
    broker_user: str | None = None
    # Log brokers at debug level so ACL refusals ("Denied PUBLISH") are audited and counted.
    audit_broker_denials: bool = True
    health_host: str = "127.0.0.1"
    health_port: int = 9465
    worker_restart_backoff_s: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise RelayConfigError(f"workers must be 1-64; found {self.workers}")
        if (self.managed_ot is None) != (self.managed_it is None):
            raise RelayConfigError("manage both brokers or neither (mixed setups are not tested)")
        if self.managed_ot is not None and self.broker_dir is None:
            raise RelayConfigError("managed brokers need broker_dir for configs and persistence")
        if self.managed_ot is not None and self.worker.crl_path is None:
            raise RelayConfigError("managed brokers need the CA's CRL (worker crl_path)")
        if self.health_host not in ("127.0.0.1", "::1", "localhost"):
            raise RelayConfigError(
                f"the health/metrics endpoint listens on loopback only; found {self.health_host!r}"
            )

    def managed_brokers(self) -> ManagedBrokers:
        """The managed brokers; `RelayConfigError` when this appliance talks to external ones."""
        if (
            self.managed_ot is None
            or self.managed_it is None
            or self.broker_dir is None
            or self.worker.crl_path is None
        ):
            raise RelayConfigError("this appliance manages no brokers; it dials external ones")
        return ManagedBrokers(
            self.managed_ot, self.managed_it, self.broker_dir, self.worker.crl_path
        )
