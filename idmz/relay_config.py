"""Load relay.toml into the frozen `relay.config.ApplianceConfig` (the only place that reads it).

Relative paths in relay.toml are resolved against the idmz home (``--home``); the CA files
come from ``<home>/ca/`` (docs/contracts.md section 5), the audit log is ``<home>/audit/``, the
relay's state (spool, dedup window, rendered broker configs) ``<home>/relay/``. Unknown keys
are errors: a typo must not silently fall back to a default. See deploy/relay.toml.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from bedrock.tables import Table
from idmz.audit_log import audit_origin
from idmz.home import Home
from pki.publication import CAPublication
from relay.config import (
    AcceptedAudit,
    ApplianceConfig,
    BrokerEndpoint,
    ManagedBroker,
    RelayLimits,
    TLSFiles,
    WorkerConfig,
)
from relay.errors import RelayConfigError

_LIMITS = set(RelayLimits.__dataclass_fields__)
# Keys a table may hold even where this configuration does not read them (external brokers).
_BROKER = {
    "host",
    "port",
    "managed",
    "bind_address",
    "keepalive_s",
    "max_queued_messages",
    "bound_port",
}
_TLS = {"ca", "relay_cert", "relay_key", "server_cert", "server_key"}


def _path(home: Home, value: str, key: str) -> Path:
    if not value:
        raise RelayConfigError(f"relay.toml: {key} must be a non-empty path string")
    p = Path(value)
    return p if p.is_absolute() else home.root / p


def load_relay_config(
    text: str, *, home: Home, source: Path, environ: Mapping[str, str] = os.environ
) -> ApplianceConfig:
    """``audit_origin`` defaults to the one rule every idmz command uses (`idmz.audit_log`):
    the existing log's origin, else ``IDMZ_AUDIT_ORIGIN``, else ``<hostname>/idmz-audit``; so
    the relay opens a log another command created first. An explicit ``audit_origin`` is an
    operator's choice and a log with another origin refuses it."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RelayConfigError(f"{source}: not valid TOML: {exc}") from exc
    root = Table(doc, str(source), error=RelayConfigError)
    policy_path = Path(
        root.text("policy", required=True)  # the path to the policy document
    )
    if not policy_path.is_absolute():
        policy_path = (source.parent / policy_path).resolve()
    try:
        policy_text = policy_path.read_text()
    except OSError as exc:
        raise RelayConfigError(f"{source}: cannot read policy {policy_path}: {exc}") from exc
    tls = root.sub_or_empty("tls")
    client_tls = TLSFiles(
        _path(home, tls.text("ca", required=True), "tls.ca"),
        _path(home, tls.text("relay_cert", required=True), "tls.relay_cert"),
        _path(home, tls.text("relay_key", required=True), "tls.relay_key"),
    )
    ot, it = root.sub_or_empty("ot"), root.sub_or_empty("it")
    managed = ot.flag("managed", True)
    if managed != it.flag("managed", True):
        raise RelayConfigError(f"{source}: [ot] and [it] must both be managed or both external")

    def endpoint(t: Table, default_port: int) -> BrokerEndpoint:
        return BrokerEndpoint(
            t.text("host", "127.0.0.1"),
            t.integer("port", default_port),
            client_tls,
            keepalive_s=t.integer("keepalive_s", 15),
        )

    ot_ep, it_ep = endpoint(ot, 8883), endpoint(it, 8884)
    managed_ot = managed_it = None
    if managed:
        server_cert = tls.text("server_cert")
        server_key = tls.text("server_key")
        for key, value in (("server_cert", server_cert), ("server_key", server_key)):
            if value is None:
                raise RelayConfigError(f"{source}: managed brokers need [tls] {key}")

        def broker(t: Table, ep: BrokerEndpoint) -> ManagedBroker:
            return ManagedBroker(
                t.text("bind_address", ep.host),
                ep.port,
                client_tls.cafile,
                _path(home, server_cert, "tls.server_cert"),
                _path(home, server_key, "tls.server_key"),
                max_queued_messages=t.integer("max_queued_messages", 100_000),
                bound_port=t.integer("bound_port"),
            )

        managed_ot, managed_it = broker(ot, ot_ep), broker(it, it_ep)
    for t in (ot, it):
        t.only(_BROKER)
    tls.only(_TLS)
    try:
        limits = RelayLimits(**root.sub_or_empty("limits").only(_LIMITS))
    except TypeError as exc:
        raise RelayConfigError(f"{source}: [limits]: {exc}") from exc
    try:
        accepted = AcceptedAudit(root.text("accepted_audit", "per-batch"))
    except ValueError as exc:
        raise RelayConfigError(
            f"{source}: accepted_audit must be 'per-batch' or 'per-message'"
        ) from exc
    origin = root.raw("audit_origin")
    if origin is None:
        origin = audit_origin(home, environ)
    elif not isinstance(origin, str) or not origin.strip():
        raise RelayConfigError(f"{source}: audit_origin must be a non-empty string")
    health, brokers = root.sub_or_empty("health"), root.sub_or_empty("brokers")
    share_secret = root.text("share_secret")
    relay_dir = home.relay_dir
    published = CAPublication(home.ca_dir)
    worker = WorkerConfig(
        ot=ot_ep,
        it=it_ep,
        policy_text=policy_text,
        policy_source=str(policy_path),
        state_dir=relay_dir / "state",
        audit_dir=home.audit_dir,
        audit_origin=origin,
        crl_path=published.crl_pem,
        issuing_ca_path=published.issuing_cert,
        ledger_path=published.ledger,
        accepted_audit=accepted,
        limits=limits,
        share_secret_file=(
            _path(home, share_secret, "share_secret") if share_secret is not None else None
        ),
    )
    config = ApplianceConfig(
        worker=worker,
        workers=root.integer("workers", 1),
        managed_ot=managed_ot,
        managed_it=managed_it,
        broker_dir=relay_dir / "brokers" if managed else None,
        mosquitto_path=brokers.text("mosquitto", "mosquitto"),
        broker_user=brokers.text("user"),
        audit_broker_denials=brokers.flag("audit_denials", True),
        health_host=health.text("host", "127.0.0.1"),
        health_port=health.integer("port", 9465),
    )
    for t in (health, brokers, root):
        t.done()
    return config
