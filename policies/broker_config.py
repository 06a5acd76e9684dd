"""Render Mosquitto 2.0 configuration and ACL files from a policy and the device registry.

Two brokers, both TLS-only with client certificates (mosquitto.conf(5), Mosquitto 2.0):

* OT-facing: gateways publish; each device's certificate CN is its identity path and
  ``use_identity_as_username true`` makes it the MQTT username, so the ACL's ``user <path>``
  block binds the connection to exactly the sub-topics its class lists. The relay's user may
  read everything under the enterprise (it subscribes with ``$share/<group>/<enterprise>/#``;
  Mosquitto 2.0 checks a shared subscription's ACL on the filter without the share prefix).
* IT-facing: only the relay writes, and only the exact device topics; consumers read under
  their policy prefixes. No user has a wildcard write anywhere.

Sessions are bound to certificates (ADR 0058). The listener takes the certificate CN as both the
username and the client id (``use_identity_as_username``, ``use_username_as_clientid``), so no
client can take another identity's session. With the idmz broker plugin (`BrokerPlugin`) the
plugin decides the ACLs from `RenderedBroker.rules`, and an optional second, bound-id listener
lets clients choose ``<identity>`` or ``<identity>:<suffix>`` as client id (the plugin checks
it at CONNECT): several sessions of one identity, such as the relay's workers. The plugin's OT
write rules of a device's topic classes carry the class's limits (``max_messages_per_s``,
``burst``), which the plugin enforces per identity (ADR 0141); the acl_file has no such cap.

Inputs are plain values (ports, file paths, the list of registered identities), so the relay,
the demo and ``idmz policy render`` each render into their own directories. Paths are checked
for characters that would let a value inject configuration lines. No I/O happens here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from pki.identity import ConsumerIdentity, DeviceIdentity
from policies.document import Policy, TopicLimits, Zone
from policies.errors import PolicyConfigError
from policies.sparkplug_grants import sparkplug_grants

# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are always AEAD).
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ]
)
# Room for the topic, MQTT 5 properties and the fixed header on top of the largest payload.
PACKET_OVERHEAD_BYTES = 4096
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_./:@%+=,-]+")
_LOG_DEST = re.compile(r"(stderr|stdout|syslog|topic|none|file [A-Za-z0-9_./@%+=,-]+)")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Paths as the broker will see them (absolute paths are safest)."""

    cafile: str  # CA bundle that client certificates must chain to (chain.pem: issuing + root)
    certfile: str  # the broker's server certificate
    keyfile: str  # the broker's private key
    crlfile: str  # the CA's CRL (PEM); Mosquitto re-reads it on SIGHUP
    # on_stale_crl = "keep-last" in effect (ADR 0036): crlfile is past nextUpdate, so it is left
    # out (a comment names it); the ACLs and the revoke plugin carry the last known revocations.
    unsafe_without_crl: bool = False


KEPT_LAST_CRL_MARK = "# idmz-keep-last-crl:"  # followed by the crlfile left out


@dataclass(frozen=True, slots=True)
class BrokerPlugin:
    """The idmz broker plugin (relay/native/idmz_revoke.c) and its files, as the broker sees them."""

    path: str  # the compiled plugin
    revoked_file: str  # identities refused and kicked
    rules_file: str  # where `RenderedBroker.rules` will be installed
    report_file: str | None = None  # where the plugin appends refusals; None: not reported
    bound_port: int | None = None  # a second listener where the plugin binds chosen client ids


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    port: int
    tls: TlsFiles
    acl_file: str  # where the rendered ACL will be installed
    bind_address: str | None = None  # None: every interface
    persistence_dir: str | None = None  # None: persistence off (the relay has its own spool)
    log_dest: tuple[str, ...] = ("stderr",)  # Mosquitto log_dest values, e.g. "file /var/log/x"
    pid_file: str | None = None
    # Mosquitto started as root switches to this user (its default is "mosquitto"), which must
    # be able to read the ACL file and, on reload, the CRL. None: leave Mosquitto's default.
    run_as_user: str | None = None
    # Bounded per-client queue (messages held for an offline persistent session or beyond the
    # in-flight window); overflow is dropped by Mosquitto and counted in $SYS. 0 = unbounded.
    max_queued_messages: int = 100_000
    plugin: BrokerPlugin | None = None  # None: use_username_as_clientid binds the client id


@dataclass(frozen=True, slots=True)
class Registry:
    """Who exists: registered devices (classes come from the policy) and IT consumers."""

    devices: tuple[DeviceIdentity, ...] = ()
    consumers: tuple[ConsumerIdentity, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderedBroker:
    zone: Zone
    config: str  # mosquitto.conf text
    acl: str  # acl_file text (what decides without the plugin)
    # The plugin's rules: "<read|write> <identity> <filter>" lines, the same grants; a device's
    # OT write rule ends with its topic class's "<rate> <burst>" (the plugin's cap, ADR 0141).
    rules: str


@dataclass(frozen=True, slots=True)
class RenderedDeployment:
    ot: RenderedBroker
    it: RenderedBroker
    # Registry entries that received no rights, with the reason (for the operator to read).
    notes: tuple[str, ...] = field(default_factory=tuple)


MIN_SHARE_SECRET_BYTES = 16


def relay_subscription(policy: Policy, share_secret: bytes) -> str:
    """The relay's OT subscription: ``$share/<group>/<enterprise>/#`` with an unguessable group.

    Mosquitto 2.0's acl_file does not check SUBSCRIBE (read rights are checked per message on
    delivery), so any authenticated client, a compromised gateway included, may join a shared
    group it can name. The broker then hands that member its share of the messages and drops
    them at the read check: silent loss for the relay (test_broker_integration proves both the
    attack on a public group name and this defence). The group name is therefore
    ``<policy share_group>-<32 hex digits derived from a secret only the relay holds>``; it
    appears in no broker file, because the ACL is checked on the filter without the share
    prefix. Every worker of one relay uses the same secret, hence the same group.
    """
    tag = _secret_tag(share_secret, b"idmz relay share group", "share-group")[:32]
    return f"$share/{policy.relay.share_group}-{tag}/{policy.enterprise}/#"


def _secret_tag(share_secret: bytes, domain: bytes, use: str) -> str:
    """SHA-256 hex of the relay's secret, separated per use by ``domain``."""
    if len(share_secret) < MIN_SHARE_SECRET_BYTES:
        raise PolicyConfigError(
            f"the relay's {use} secret needs at least {MIN_SHARE_SECRET_BYTES} bytes; "
            f"found {len(share_secret)}",
            key="relay.share_group",
        )
    return hashlib.sha256(domain + b"\x00" + share_secret).hexdigest()


SYS_DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"  # messages dropped, queue full
RELAY_CLIENT_ID_SEPARATOR = ":"  # never in an identity path, so no identity owns another's ids


def relay_client_id(policy: Policy, share_secret: bytes, index: int, side: str) -> str:
    """The client id of relay worker ``index`` on ``side`` ("ot" or "it"):
    ``<relay identity>:<16 hex digits derived from the relay's secret>-<index>-<side>``.

    The broker plugin admits a client id only if it is the certificate's identity or
    ``<identity>:<suffix>`` (ADR 0058), so only the relay's certificate may use these; the
    secret-derived part also keeps them unguessable where a broker does not bind them.
    """
    tag = _secret_tag(share_secret, b"idmz relay client id", "client-id")[:16]
    return f"{policy.relay.identity.path}{RELAY_CLIENT_ID_SEPARATOR}{tag}-{index}-{side}"


def _value(name: str, value: str) -> str:
    if not _SAFE_VALUE.fullmatch(value):
        raise PolicyConfigError(
            f"{value!r} may hold only letters, digits and _./:@%+=,- (no spaces or newlines, "
            "which Mosquitto would split or read as a new option)",
            key=name,
        )
    return value


def _settings_lines(s: BrokerSettings, zone: Zone) -> list[str]:
    if not 1 <= s.port <= 65535:
        raise PolicyConfigError(f"port must be 1-65535; found {s.port}", key=f"{zone}.port")
    lines = []
    if s.persistence_dir is None:
        lines.append("persistence false")
    else:
        lines += [
            "persistence true",
            f"persistence_location {_value('persistence_dir', s.persistence_dir).rstrip('/')}/",
        ]
    if s.run_as_user:
        lines.append(f"user {_value('run_as_user', s.run_as_user)}")
    if s.pid_file:
        lines.append(f"pid_file {_value('pid_file', s.pid_file)}")
    for dest in s.log_dest or ("stderr",):
        if not _LOG_DEST.fullmatch(dest):
            raise PolicyConfigError(f"unsupported log destination {dest!r}", key="log_dest")
        lines.append(f"log_dest {dest}")
    return lines


def _listener_lines(s: BrokerSettings) -> list[str]:
    bind = f" {_value('bind_address', s.bind_address)}" if s.bind_address else ""
    return [
        f"listener {s.port}{bind}",
        f"cafile {_value('cafile', s.tls.cafile)}",
        f"certfile {_value('certfile', s.tls.certfile)}",
        f"keyfile {_value('keyfile', s.tls.keyfile)}",
        (f"{KEPT_LAST_CRL_MARK} " if s.tls.unsafe_without_crl else "crlfile ")
        + _value("crlfile", s.tls.crlfile),
        "tls_version tlsv1.2",
        f"ciphers {TLS12_CIPHERS}",
        "require_certificate true",
    ]


def _plugin_lines(s: BrokerSettings) -> list[str]:
    if s.plugin is None:
        return []
    p = s.plugin
    lines = [
        "# The idmz plugin decides the ACLs (acl_file decides only without it), refuses revoked",
        "# identities and binds the sessions of the bound-id listener (ADR 0058).",
        f"plugin {_value('plugin', p.path)}",
        f"plugin_opt_revoked_file {_value('revoked_file', p.revoked_file)}",
        f"plugin_opt_rules_file {_value('rules_file', p.rules_file)}",
    ]
    if p.report_file is not None:
        lines.append(f"plugin_opt_report_file {_value('report_file', p.report_file)}")
    return lines


def _bound_listener_lines(s: BrokerSettings) -> list[str]:
    if s.plugin is None or s.plugin.bound_port is None:
        return []
    if not 1 <= s.plugin.bound_port <= 65535 or s.plugin.bound_port == s.port:
        raise PolicyConfigError(
            f"the bound-id port must be 1-65535 and not {s.port}; found {s.plugin.bound_port}",
            key="bound_port",
        )
    return [
        "# Bound-id listener: no use_identity_as_username, so Mosquitto asks the plugin at every",
        "# CONNECT. It takes the identity from the certificate CN, admits only the client ids",
        "# <identity> and <identity>:<suffix>, and sets the username to the identity. Several",
        "# sessions of one identity (the relay's workers) connect here.",
        *_listener_lines(dataclasses.replace(s, port=s.plugin.bound_port)),
        "",
    ]


def max_packet_bytes(policy: Policy) -> int:
    """The brokers' ``max_packet_size``: the largest payload any limit allows plus room for the
    topic, properties and fixed header. The relay's OT reader announces more than this."""
    largest = max((lim.max_message_bytes for lim in policy.limits.values()), default=0)
    if policy.sparkplug is not None:
        largest = max(largest, policy.sparkplug.limits.max_payload_bytes)
    return largest + PACKET_OVERHEAD_BYTES


def _config(policy: Policy, zone: Zone, s: BrokerSettings, purpose: str) -> str:
    lines = [
        f"# idmz {zone.upper()}-facing broker: {purpose}",
        f"# idmz-zone: {zone}",
        f"# idmz-policy-sha256: {policy.content_hash}",
        "# Rendered by `idmz policy render`; do not edit, re-render from the policy instead.",
        "",
        "# Identity comes only from client certificates; ACLs bind it to topics.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {_value('acl_file', s.acl_file)}",
        f"max_packet_size {max_packet_bytes(policy)}",
        f"max_queued_messages {_queue_limit(s)}",
        "connection_messages true",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "set_tcp_nodelay true",
        *_settings_lines(s, zone),
        "",
        "# The main listener: TLS 1.2+ with a client certificate from the idmz CA, checked",
        "# against the CRL (re-read on SIGHUP). There is no plaintext listener.",
        *_listener_lines(s),
        "# The certificate CN is the username and the client id: no client can take another",
        "# identity's session (ADR 0058).",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "",
        *_bound_listener_lines(s),
        *_plugin_lines(s),
    ]
    return "\n".join(lines)


def _queue_limit(s: BrokerSettings) -> int:
    if s.max_queued_messages < 1:
        raise PolicyConfigError(
            f"max_queued_messages must be at least 1 (0 would be unbounded); "
            f"found {s.max_queued_messages}",
            key="max_queued_messages",
        )
    return s.max_queued_messages


def _device_topics(
    policy: Policy, devices: Iterable[DeviceIdentity], notes: list[str]
) -> list[tuple[DeviceIdentity, str, list[str]]]:
    out = []
    for device in sorted(set(devices)):
        if device.enterprise != policy.enterprise:
            notes.append(f"device {device}: outside enterprise {policy.enterprise!r}; no rights")
            continue
        cls = policy.class_of(device)
        if cls is None:
            notes.append(f"device {device}: no device class in the policy; no rights")
            continue
        out.append(
            (device, cls, [f"{device.path}/{sub}" for sub in policy.device_classes[cls].publish])
        )
    return out


# The largest cap the plugin takes (relay/native/idmz_revoke.c IDMZ_MAX_RATE, IDMZ_MAX_BURST).
# Limits past them render no cap: the broker could not reach them anyway, the relay still can.
MAX_CAP_RATE = 1_000_000
MAX_CAP_BURST = 1_000_000_000


def rate_cap(limits: TopicLimits | None) -> str:
    """The rule fields `` <rate> <burst>`` capping a device's publishes on a topic class at the
    OT broker: exactly the numbers the relay's limiter applies (`policies.RateLimiter`), so the
    broker never refuses what the relay would forward. ``""`` (no cap) when there are no limits
    or they exceed what the plugin takes. The rate is written as a plain decimal (no exponent).

    >>> rate_cap(TopicLimits("status", 4096, 0.5, 10, "envelope"))
    ' 0.5 10'
    """
    if limits is None:
        return ""
    rate, burst = limits.max_messages_per_s, limits.burst
    if not (0 < rate <= MAX_CAP_RATE and 1 <= burst <= MAX_CAP_BURST):
        return ""
    text = format(Decimal(repr(float(rate))), "f")
    return f" {text.rstrip('0').rstrip('.') if '.' in text else text} {burst}"


def _acl_header(policy: Policy, zone: Zone) -> list[str]:
    return [
        f"# idmz {zone.upper()}-facing broker ACL (Mosquitto acl_file format)",
        f"# idmz-policy-sha256: {policy.content_hash}",
        "# Every user is a certificate CN (use_identity_as_username). Anything not listed is denied.",
        "",
    ]


def _rules_header(policy: Policy, zone: Zone) -> list[str]:
    return [
        f"# idmz {zone.upper()}-facing broker: the idmz plugin's rules (<read|write> <identity> <filter>",
        "# [<max messages/s> <burst>]: a write rule's rate cap, per identity, ADR 0141)",
        f"# idmz-policy-sha256: {policy.content_hash}",
        "# Anything not granted here is refused and reported.",
    ]


def render_brokers(
    policy: Policy, registry: Registry, *, ot: BrokerSettings, it: BrokerSettings
) -> RenderedDeployment:
    """Render both brokers' configuration and ACL files for the registered identities."""
    notes: list[str] = []
    devices = _device_topics(policy, registry.devices, notes)
    if devices and not policy.device_data_flows:
        notes.append("no ot -> idmz and idmz -> it publish conduits: devices get no rights")
        devices = []
    relay = policy.relay.identity.path

    ot_acl = _acl_header(policy, Zone.OT)
    it_acl = _acl_header(policy, Zone.IT)
    # The plugin's rules: the same grants as the ACL files, one per line.
    ot_rules = _rules_header(policy, Zone.OT)
    it_rules = _rules_header(policy, Zone.IT)
    it_acl += ["# the relay republishes exactly the device topics, nothing else", f"user {relay}"]
    for device, cls, topics in devices:
        ot_acl += [
            f"# class {cls}",
            f"user {device.path}",
            *(f"topic write {t}" for t in topics),
            "",
        ]
        it_acl += [f"topic write {t}" for t in topics]
        publish = policy.device_classes[cls].publish
        ot_rules += [
            f"write {device.path} {t}{rate_cap(policy.limits.get(sub))}"
            for sub, t in zip(publish, topics, strict=True)
        ]
        it_rules += [f"write {relay} {t}" for t in topics]
    ot_acl += [
        "# the relay reads device traffic (shared subscription $share/<group>/<enterprise>/#)",
        f"user {relay}",
        f"topic read {policy.enterprise}/#",
        "",
    ]
    ot_rules.append(f"read {relay} {policy.enterprise}/#")
    # The appliance watches each broker's dropped-message counter (relay.broker_overflow).
    for rules in (ot_rules, it_rules):
        rules.append(f"read {relay} {SYS_DROPPED_TOPIC}")
    it_acl.append("")
    for zone, user, grants in sparkplug_grants(policy, registry.devices, notes):  # ADR 0110
        acl, rules = (ot_acl, ot_rules) if zone is Zone.OT else (it_acl, it_rules)
        acl += [f"user {user}", *(f"topic {a} {t}" for a, t in grants), ""]
        rules += [f"{a} {user} {t}" for a, t in grants]
    known = set()
    if not policy.consumers_may_subscribe and policy.consumers:
        notes.append("no it -> idmz subscribe conduit: consumers get no rights")
    for name, rule in sorted(policy.consumers.items() if policy.consumers_may_subscribe else ()):
        path = ConsumerIdentity(policy.enterprise, name).path
        known.add(path)
        if not rule.subscribe:
            notes.append(f"consumer {path}: empty subscribe list; no rights")
            continue
        it_acl += [f"user {path}", *(f"topic read {p.path}/#" for p in rule.subscribe), ""]
        it_rules += [f"read {path} {p.path}/#" for p in rule.subscribe]
    for consumer in registry.consumers:
        if consumer.path not in known:
            notes.append(f"consumer {consumer}: no consumer rule in the policy; no rights")

    return RenderedDeployment(
        ot=RenderedBroker(
            Zone.OT,
            _config(policy, Zone.OT, ot, "gateways publish, the relay reads"),
            "\n".join(ot_acl),
            "\n".join(ot_rules) + "\n",
        ),
        it=RenderedBroker(
            Zone.IT,
            _config(policy, Zone.IT, it, "the relay publishes, IT consumers read"),
            "\n".join(it_acl),
            "\n".join(it_rules) + "\n",
        ),
        notes=tuple(notes),
    )
