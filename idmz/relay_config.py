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
from typing import Any

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

_TOP = {
    "policy",
    "workers",
    "accepted_audit",
    "audit_origin",
    "share_secret",
    "ot",
    "it",
    "tls",
    "limits",
    "health",
    "brokers",
}
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
_LIMITS = set(RelayLimits.__dataclass_fields__)
_HEALTH = {"host", "port"}
_BROKERS = {"mosquitto", "user", "audit_denials"}


def _table(doc: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise RelayConfigError(f"relay.toml: [{key}] must be a table")
    unknown = set(value) - allowed
    if unknown:
        raise RelayConfigError(
            f"relay.toml: unknown key(s) in [{key}]: {', '.join(sorted(unknown))}; "
            f"expected some of {', '.join(sorted(allowed))}"
        )
    return value


def _path(home: Home, value: object, key: str) -> Path:
    if not isinstance(value, str) or not value:
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
    unknown = set(doc) - _TOP
    if unknown:
        raise RelayConfigError(f"{source}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    if "policy" not in doc:
        raise RelayConfigError(f"{source}: 'policy' (path to the policy document) is required")
    policy_path = Path(str(doc["policy"]))
    if not policy_path.is_absolute():
        policy_path = (source.parent / policy_path).resolve()
    try:
        policy_text = policy_path.read_text()
    except OSError as exc:
        raise RelayConfigError(f"{source}: cannot read policy {policy_path}: {exc}") from exc
    tls = _table(doc, "tls", _TLS)
    for key in ("ca", "relay_cert", "relay_key"):
        if key not in tls:
            raise RelayConfigError(f"{source}: [tls] {key} is required")
    client_tls = TLSFiles(
        _path(home, tls["ca"], "tls.ca"),
        _path(home, tls["relay_cert"], "tls.relay_cert"),
        _path(home, tls["relay_key"], "tls.relay_key"),
    )
    ot = _table(doc, "ot", _BROKER)
    it = _table(doc, "it", _BROKER)
    managed = bool(ot.get("managed", True))
    if managed != bool(it.get("managed", True)):
        raise RelayConfigError(f"{source}: [ot] and [it] must both be managed or both external")

    def endpoint(t: dict[str, Any], default_port: int) -> BrokerEndpoint:
        return BrokerEndpoint(
            str(t.get("host", "127.0.0.1")),
            int(t.get("port", default_port)),
            client_tls,
            keepalive_s=int(t.get("keepalive_s", 15)),
        )

    ot_ep, it_ep = endpoint(ot, 8883), endpoint(it, 8884)
    managed_ot = managed_it = None
    if managed:
        for key in ("server_cert", "server_key"):
            if key not in tls:
                raise RelayConfigError(f"{source}: managed brokers need [tls] {key}")
        server_cert = _path(home, tls["server_cert"], "tls.server_cert")
        server_key = _path(home, tls["server_key"], "tls.server_key")

        def broker(t: dict[str, Any], ep: BrokerEndpoint) -> ManagedBroker:
            return ManagedBroker(
                str(t.get("bind_address", ep.host)),
                ep.port,
                client_tls.cafile,
                server_cert,
                server_key,
                max_queued_messages=int(t.get("max_queued_messages", 100_000)),
                bound_port=int(t["bound_port"]) if "bound_port" in t else None,
            )

        managed_ot, managed_it = broker(ot, ot_ep), broker(it, it_ep)
    limits_doc = _table(doc, "limits", _LIMITS)
    try:
        limits = RelayLimits(**limits_doc)
    except TypeError as exc:
        raise RelayConfigError(f"{source}: [limits]: {exc}") from exc
    try:
        accepted = AcceptedAudit(str(doc.get("accepted_audit", "per-batch")))
    except ValueError as exc:
        raise RelayConfigError(
            f"{source}: accepted_audit must be 'per-batch' or 'per-message'"
        ) from exc
    origin = doc.get("audit_origin")
    if origin is None:
        origin = audit_origin(home, environ)
    elif not isinstance(origin, str) or not origin.strip():
        raise RelayConfigError(f"{source}: audit_origin must be a non-empty string")
    health = _table(doc, "health", _HEALTH)
    brokers = _table(doc, "brokers", _BROKERS)
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
            _path(home, doc["share_secret"], "share_secret") if "share_secret" in doc else None
        ),
    )
    return ApplianceConfig(
        worker=worker,
        workers=int(doc.get("workers", 1)),
        managed_ot=managed_ot,
        managed_it=managed_it,
        broker_dir=relay_dir / "brokers" if managed else None,
        mosquitto_path=str(brokers.get("mosquitto", "mosquitto")),
        broker_user=brokers.get("user"),
        audit_broker_denials=bool(brokers.get("audit_denials", True)),
        health_host=str(health.get("host", "127.0.0.1")),
        health_port=int(health.get("port", 9465)),
    )
