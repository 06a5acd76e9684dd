"""The policy document as frozen objects, its canonical form and its content hash.

A `Policy` is built only by `policies.loader.load_policy` (which validates every key); once it
exists it is consistent: every device class topic has limits, every limit names a schema, no
conduit leads into OT, IT consumers have no publish rights.

Content hash: ``sha256`` over the canonical JSON of the *effective* policy (the document after
defaults are filled in): UTF-8, object keys sorted, no insignificant whitespace
(``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``), lists in
document order, sets (actions, key types) sorted. Comments, formatting, key order and the choice
of TOML or YAML do not change it; any change in meaning, including a changed default, does.
Callers record ``policy.content_hash`` in the audit log (``policy.document.loaded``) and the
relay stamps it on every forwarded message (``idmz-policy-sha256``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import jsonschema_rs

from pki.identity import ConsumerIdentity, DeviceIdentity, IdentityPrefix
from policies.decision import Action
from policies.sparkplug import SparkplugPolicy

POLICY_VERSION = 1
CERT_PROFILES = ("device", "consumer", "server", "model-signer", "issuing-ca", "root-ca")
KEY_TYPES = ("rsa", "ec-p256", "ec-p384", "ec-p521", "ed25519")
# Nesting of a message's arrays and objects: the envelope needs 3-4 levels; a parser's stack
# and a schema walk stay small below the ceiling whatever a device sends.
DEFAULT_MAX_JSON_DEPTH = 32
MAX_JSON_DEPTH_CEILING = 128


class Zone(StrEnum):
    OT = "ot"
    IDMZ = "idmz"
    IT = "it"


class AuditFailureMode(StrEnum):
    """What the relay does when it cannot write an audit record."""

    REFUSE = "refuse"  # hold the message (not acknowledged on OT) until audit works again
    FORWARD_AND_ALARM = "forward-and-alarm"  # keep data flowing, raise an alarm per message


class StaleCrlMode(StrEnum):
    """What a broker does for the clients of a zone once its CRL is past nextUpdate (ADR 0036).
    Mosquitto 2.0.11 refuses every TLS handshake with such a CRL."""

    FAIL_CLOSED = "fail-closed"  # keep the stale crlfile: every new handshake is refused
    # Render the broker without crlfile until a fresh CRL arrives; the last known revocations
    # stay enforced by the ACLs (revoked identities removed) and the revoke plugin's list.
    KEEP_LAST = "keep-last"


# The zones whose clients hold TLS sessions with a broker: OT gateways (OT-facing broker) and
# IT consumers (IT-facing broker). Defaults: the plant keeps running, IT reads wait (ADR 0036).
STALE_CRL_DEFAULTS: Mapping[Zone, StaleCrlMode] = MappingProxyType(
    {Zone.OT: StaleCrlMode.KEEP_LAST, Zone.IT: StaleCrlMode.FAIL_CLOSED}
)


@dataclass(frozen=True, slots=True)
class Conduit:
    """Principals in ``from_zone`` may perform ``actions`` on brokers in ``to_zone``."""

    name: str
    from_zone: Zone
    to_zone: Zone
    actions: frozenset[Action]


@dataclass(frozen=True, slots=True)
class DeviceClass:
    """Sub-topics (under the device's own path) that devices of this class may publish."""

    name: str
    publish: tuple[str, ...]
    description: str = ""
    sparkplug: bool = False  # its devices may be Sparkplug B edge nodes ([sparkplug.nodes])


@dataclass(frozen=True, slots=True)
class ConsumerRule:
    """An IT consumer may subscribe under these identity prefixes; it never publishes."""

    name: str
    subscribe: tuple[IdentityPrefix, ...]
    description: str = ""
    sparkplug_groups: tuple[str, ...] = ()  # Sparkplug groups it reads (and their births)


@dataclass(frozen=True, slots=True)
class TopicLimits:
    """Limits for one topic class (a device class sub-topic such as ``telemetry``)."""

    topic_class: str
    max_message_bytes: int
    max_messages_per_s: float
    burst: int
    schema: str  # a key of Policy.schemas
    envelope_kind: str | None = None  # when set, the envelope's "kind" must equal it
    # Arrays and objects nested deeper are refused before parsing (policies.strict_json).
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH


@dataclass(frozen=True, slots=True)
class CertificatePolicy:
    key_types: tuple[str, ...] = ("ec-p256", "ec-p384", "ed25519", "rsa")
    min_rsa_bits: int = 3072
    max_validity_days: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(
            {
                "device": 90,
                "consumer": 365,
                "server": 397,
                "model-signer": 730,
                "issuing-ca": 1825,
                "root-ca": 3650,
            }
        )
    )
    # Renew once this fraction of the lifetime has passed (2/3: a 90-day cert renews at day 60).
    renewal_window_fraction: float = 2 / 3
    # After expiry a device may still renew with its old certificate for this long (0 = never).
    renewal_grace_days: int = 0
    expiry_alert_days: tuple[int, ...] = (30, 14, 7, 1)

    def renewal_due_at(self, not_before: datetime, not_after: datetime) -> datetime:
        """When a certificate with this lifetime should be renewed (the renewal window opens)."""
        return not_before + (not_after - not_before) * self.renewal_window_fraction

    def expiry_alert(self, not_after: datetime, now: datetime) -> int | None:
        """The tightest alert threshold (days) the remaining lifetime has crossed, or None.
        An expired certificate returns the smallest threshold."""
        remaining = not_after - now
        crossed = [d for d in self.expiry_alert_days if remaining <= timedelta(days=d)]
        return min(crossed) if crossed else None

    def renewal_accepted(self, not_after: datetime, now: datetime) -> bool:
        """Whether a certificate may still renew itself: unexpired, or within the grace."""
        return now <= not_after + timedelta(days=self.renewal_grace_days)


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    identity: ConsumerIdentity
    share_group: str = "idmz-relay"
    on_audit_failure: AuditFailureMode = AuditFailureMode.REFUSE


def _json_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


@dataclass(frozen=True, eq=False)
class Policy:
    """A validated policy. Compare policies by ``content_hash``."""

    version: int
    enterprise: str
    description: str
    zones: Mapping[Zone, str]  # zone -> description
    conduits: tuple[Conduit, ...]
    device_classes: Mapping[str, DeviceClass]
    assignments: Mapping[IdentityPrefix, str]  # identity prefix -> device class name
    consumers: Mapping[str, ConsumerRule]
    limits: Mapping[str, TopicLimits]  # topic class -> limits
    schemas: Mapping[str, Mapping[str, Any]]  # name -> JSON Schema
    certificates: CertificatePolicy
    relay: RelayPolicy
    # zone -> what its broker does with a CRL past nextUpdate (ot and it only)
    on_stale_crl: Mapping[Zone, StaleCrlMode] = field(default_factory=lambda: STALE_CRL_DEFAULTS)
    sparkplug: SparkplugPolicy | None = None  # [sparkplug] (ADR 0110)

    content_hash: str = field(init=False)
    # Precomputed lookups for the decision engine (see policies.engine).
    validators: Mapping[str, jsonschema_rs.Validator] = field(init=False, repr=False)
    class_topics: Mapping[str, frozenset[str]] = field(init=False, repr=False)
    assignment_levels: Mapping[tuple[str, ...], str] = field(init=False, repr=False)
    allowed_flows: frozenset[tuple[Zone, Zone, Action]] = field(init=False, repr=False)
    device_cache: dict[DeviceIdentity, tuple[str, frozenset[str]] | None] = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        canonical = json.dumps(
            self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        set_ = object.__setattr__
        set_(self, "content_hash", hashlib.sha256(canonical.encode()).hexdigest())
        set_(
            self,
            "validators",
            MappingProxyType(
                {n: jsonschema_rs.validator_for(dict(s)) for n, s in self.schemas.items()}
            ),
        )
        set_(
            self,
            "class_topics",
            MappingProxyType({n: frozenset(c.publish) for n, c in self.device_classes.items()}),
        )
        set_(
            self,
            "assignment_levels",
            MappingProxyType({p.levels: c for p, c in self.assignments.items()}),
        )
        set_(
            self,
            "allowed_flows",
            frozenset((c.from_zone, c.to_zone, a) for c in self.conduits for a in c.actions),
        )
        set_(self, "device_cache", {})

    @property
    def device_data_flows(self) -> bool:
        """Device data reaches IT only through two conduits: OT publishes into the IDMZ, and
        the IDMZ (the relay) publishes toward IT. Without both, no device may publish."""
        return {
            (Zone.OT, Zone.IDMZ, Action.PUBLISH),
            (Zone.IDMZ, Zone.IT, Action.PUBLISH),
        } <= self.allowed_flows

    @property
    def consumers_may_subscribe(self) -> bool:
        return (Zone.IT, Zone.IDMZ, Action.SUBSCRIBE) in self.allowed_flows

    def class_of(self, device: DeviceIdentity) -> str | None:
        """The device class of ``device``: the most specific assigned prefix wins; None if
        no prefix covers the device (which means it may do nothing)."""
        levels = (device.enterprise, device.site, device.area, device.line, device.cell)
        own = (*levels, device.device)
        for n in range(len(own), 0, -1):
            name = self.assignment_levels.get(own[:n])
            if name is not None:
                return name
        return None

    def canonical(self) -> dict[str, Any]:
        """The effective policy as plain JSON values (the input of ``content_hash``). It is
        itself a valid policy document with every default written out."""
        cert = self.certificates
        return {
            "version": self.version,
            "enterprise": self.enterprise,
            "description": self.description,
            "zones": {
                str(z): {
                    "description": d,
                    **(
                        {"on_stale_crl": str(self.on_stale_crl[z])}
                        if z in self.on_stale_crl
                        else {}
                    ),
                }
                for z, d in self.zones.items()
            },
            "conduits": [
                {
                    "name": c.name,
                    "from": str(c.from_zone),
                    "to": str(c.to_zone),
                    "actions": sorted(str(a) for a in c.actions),
                }
                for c in self.conduits
            ],
            "device_classes": {
                n: {
                    "publish": list(c.publish),
                    "description": c.description,
                    **({"sparkplug": True} if c.sparkplug else {}),
                }
                for n, c in self.device_classes.items()
            },
            "assignments": {p.path: c for p, c in self.assignments.items()},
            "consumers": {
                n: {
                    "subscribe": [p.path for p in c.subscribe],
                    "description": c.description,
                    **(
                        {"sparkplug_groups": list(c.sparkplug_groups)} if c.sparkplug_groups else {}
                    ),
                }
                for n, c in self.consumers.items()
            },
            "limits": {
                n: {
                    "max_message_bytes": lim.max_message_bytes,
                    "max_messages_per_s": lim.max_messages_per_s,
                    "burst": lim.burst,
                    "schema": lim.schema,
                    **({"envelope_kind": lim.envelope_kind} if lim.envelope_kind else {}),
                    "max_json_depth": lim.max_json_depth,
                }
                for n, lim in self.limits.items()
            },
            "schemas": _json_value(self.schemas),
            "certificates": {
                "key_types": sorted(cert.key_types),
                "min_rsa_bits": cert.min_rsa_bits,
                "max_validity_days": dict(cert.max_validity_days),
                "renewal_window_fraction": cert.renewal_window_fraction,
                "renewal_grace_days": cert.renewal_grace_days,
                "expiry_alert_days": list(cert.expiry_alert_days),
            },
            "relay": {
                "identity": self.relay.identity.path,
                "share_group": self.relay.share_group,
                "on_audit_failure": str(self.relay.on_audit_failure),
            },
            **({"sparkplug": self.sparkplug.canonical()} if self.sparkplug is not None else {}),
        }
