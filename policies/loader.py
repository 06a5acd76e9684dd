"""Load a policy document (TOML primary, YAML accepted) into a validated `Policy`.

Every key is checked; unknown keys are errors (a typo such as ``max_mesage_bytes`` must not
silently fall back to a default). Errors are `PolicyConfigError` naming the dotted key and,
where the parser allows, the line. No I/O: the caller reads the file and passes its text.

>>> policy = load_policy(open("deploy/policy/plant.toml").read(), source="plant.toml")
>>> policy.content_hash  # doctest: +SKIP
'3f1c...'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from pki.errors import MalformedIdentityError
from pki.identity import ConsumerIdentity, IdentityPrefix
from policies.decision import Action
from policies.document import (
    CERT_PROFILES,
    DEFAULT_MAX_JSON_DEPTH,
    KEY_TYPES,
    MAX_JSON_DEPTH_CEILING,
    POLICY_VERSION,
    STALE_CRL_DEFAULTS,
    AuditFailureMode,
    CertificatePolicy,
    Conduit,
    ConsumerRule,
    DeviceClass,
    Policy,
    RelayPolicy,
    StaleCrlMode,
    TopicLimits,
    Zone,
)
from policies.source import KeyPath, PolicyText, parse_text
from policies.sparkplug_loader import load_sparkplug, sparkplug_id
from policies.topic import LEVEL

MAX_MESSAGE_BYTES_CEILING = 16 * 1024 * 1024
_TOP_KEYS = {
    "version",
    "enterprise",
    "description",
    "zones",
    "conduits",
    "device_classes",
    "assignments",
    "consumers",
    "limits",
    "schemas",
    "certificates",
    "relay",
    "sparkplug",
}


def _prefix(doc: PolicyText, value: Any, path: KeyPath, enterprise: str) -> IdentityPrefix:
    try:
        prefix = IdentityPrefix.parse(doc.typed(value, path, str))
    except MalformedIdentityError as exc:
        doc.fail(path, str(exc))
    if prefix.levels[0] != enterprise:
        doc.fail(path, f"prefix {prefix.path!r} is outside enterprise {enterprise!r}")
    return prefix


def _conduits(doc: PolicyText, data: Mapping[str, Any]) -> tuple[Conduit, ...]:
    out = []
    for i, raw in enumerate(doc.opt(data, [], "conduits", list, [])):
        path: list[str | int] = ["conduits", i]
        raw = doc.typed(raw, path, dict)
        doc.only(raw, path, {"name", "from", "to", "actions", "description"})
        zones = {}
        for end in ("from", "to"):
            name = doc.get(raw, path, end, str)
            if name not in set(Zone):
                doc.fail([*path, end], f"unknown zone {name!r}; expected ot, idmz or it")
            zones[end] = Zone(name)
        actions = set()
        for j, a in enumerate(doc.str_list(raw, path, "actions")):
            if a not in set(Action):
                doc.fail([*path, "actions", j], f"unknown action {a!r}; expected publish|subscribe")
            actions.add(Action(a))
        if zones["from"] == zones["to"]:
            doc.fail(path, "a conduit connects two different zones")
        if zones["to"] is Zone.OT:
            doc.fail([*path, "to"], "no conduit may lead into the OT zone (nothing flows to OT)")
        if zones["from"] is Zone.IT and Action.PUBLISH in actions:
            doc.fail([*path, "actions"], "IT consumers never publish: remove 'publish'")
        out.append(
            Conduit(
                doc.label(doc.get(raw, path, "name", str), [*path, "name"]),
                zones["from"],
                zones["to"],
                frozenset(actions),
            )
        )
    return tuple(out)


def _device_classes(doc: PolicyText, data: Mapping[str, Any]) -> dict[str, DeviceClass]:
    out = {}
    for name, raw in doc.table(data, [], "device_classes").items():
        path = ["device_classes", name]
        doc.label(name, path)
        raw = doc.typed(raw, path, dict)
        doc.only(raw, path, {"publish", "description", "sparkplug"})
        topics = doc.str_list(raw, path, "publish")
        for i, sub in enumerate(topics):
            levels = sub.split("/")
            if not 1 <= len(levels) <= 4 or not all(LEVEL.fullmatch(lv) for lv in levels):
                doc.fail([*path, "publish", i], f"sub-topic {sub!r}: 1-4 levels of [a-z0-9_-]")
        if len(set(topics)) != len(topics):
            doc.fail([*path, "publish"], "lists a sub-topic twice")
        out[name] = DeviceClass(
            name,
            tuple(topics),
            doc.opt(raw, path, "description", str, ""),
            doc.opt(raw, path, "sparkplug", bool, False),
        )
    return out


def _schemas(doc: PolicyText, data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for name, raw in doc.table(data, [], "schemas").items():
        path = ["schemas", name]
        if isinstance(raw, str):  # JSON text (convenient in TOML)
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError as exc:
                doc.fail(path, f"schema is not valid JSON: {exc}")
        schema = doc.typed(raw, path, dict)
        try:
            json.dumps(schema, allow_nan=False)
            validator_for(schema).check_schema(schema)
        except (TypeError, ValueError) as exc:
            doc.fail(path, f"schema holds a non-JSON value: {exc}")
        except SchemaError as exc:
            doc.fail(path, f"not a valid JSON Schema: {exc.message}")
        out[name] = MappingProxyType(schema)
    return out


def _limits(
    doc: PolicyText, data: Mapping[str, Any], schemas: Mapping[str, Any]
) -> dict[str, TopicLimits]:
    out = {}
    for topic_class, raw in doc.table(data, [], "limits").items():
        path = ["limits", topic_class]
        raw = doc.typed(raw, path, dict)
        keys = {"max_message_bytes", "max_messages_per_s", "burst", "schema", "envelope_kind",
                "max_json_depth"}  # fmt: skip
        doc.only(raw, path, keys)
        size = doc.positive(raw, path, "max_message_bytes", int)
        if size > MAX_MESSAGE_BYTES_CEILING:
            doc.fail([*path, "max_message_bytes"], f"at most {MAX_MESSAGE_BYTES_CEILING}")
        schema = doc.get(raw, path, "schema", str)
        if schema not in schemas:
            doc.fail([*path, "schema"], f"no schema named {schema!r} under [schemas]")
        kind = raw.get("envelope_kind")
        depth = DEFAULT_MAX_JSON_DEPTH
        if "max_json_depth" in raw:
            depth = doc.positive(raw, path, "max_json_depth", int)
            if depth > MAX_JSON_DEPTH_CEILING:
                doc.fail([*path, "max_json_depth"], f"at most {MAX_JSON_DEPTH_CEILING}")
        out[topic_class] = TopicLimits(
            topic_class,
            size,
            doc.positive(raw, path, "max_messages_per_s", float),
            doc.positive(raw, path, "burst", int),
            schema,
            None if kind is None else doc.typed(kind, [*path, "envelope_kind"], str),
            depth,
        )
    return out


def _certificates(doc: PolicyText, data: Mapping[str, Any]) -> CertificatePolicy:
    path: list[str | int] = ["certificates"]
    raw = doc.table(data, [], "certificates")
    default = CertificatePolicy()
    doc.only(
        raw,
        path,
        {
            "key_types",
            "min_rsa_bits",
            "max_validity_days",
            "renewal_window_fraction",
            "renewal_grace_days",
            "expiry_alert_days",
        },
    )
    key_types = doc.str_list(raw, path, "key_types") if "key_types" in raw else default.key_types
    for i, k in enumerate(key_types):
        if k not in KEY_TYPES:
            doc.fail(
                [*path, "key_types", i], f"unknown key type {k!r}; one of {', '.join(KEY_TYPES)}"
            )
    if not key_types:
        doc.fail([*path, "key_types"], "an empty list would refuse every certificate")
    rsa_bits = doc.opt(raw, path, "min_rsa_bits", int, default.min_rsa_bits)
    if rsa_bits < 2048:
        doc.fail([*path, "min_rsa_bits"], f"must be at least 2048; found {rsa_bits}")
    validity = dict(default.max_validity_days)
    for profile, days in doc.table(raw, path, "max_validity_days").items():
        if profile not in CERT_PROFILES:
            doc.fail(
                [*path, "max_validity_days", profile], f"unknown profile; one of {CERT_PROFILES}"
            )
        validity[profile] = doc.positive(
            {profile: days}, [*path, "max_validity_days"], profile, int
        )
    fraction = doc.opt(raw, path, "renewal_window_fraction", float, default.renewal_window_fraction)
    if not 0 < fraction < 1:
        doc.fail([*path, "renewal_window_fraction"], f"must be between 0 and 1; found {fraction}")
    grace = doc.opt(raw, path, "renewal_grace_days", int, default.renewal_grace_days)
    if grace < 0:
        doc.fail([*path, "renewal_grace_days"], "must not be negative")
    alerts = default.expiry_alert_days
    if "expiry_alert_days" in raw:
        alerts = tuple(
            doc.typed(v, [*path, "expiry_alert_days", i], int)
            for i, v in enumerate(doc.get(raw, path, "expiry_alert_days", list))
        )
        if (
            not alerts
            or any(a <= 0 for a in alerts)
            or list(alerts) != sorted(set(alerts), reverse=True)
        ):
            doc.fail([*path, "expiry_alert_days"], "positive day counts, strictly decreasing")
    return CertificatePolicy(
        tuple(key_types), rsa_bits, MappingProxyType(validity), fraction, grace, alerts
    )


def _relay(doc: PolicyText, data: Mapping[str, Any], enterprise: str) -> RelayPolicy:
    path: list[str | int] = ["relay"]
    raw = doc.table(data, [], "relay")
    doc.only(raw, path, {"identity", "share_group", "on_audit_failure"})
    try:
        identity = ConsumerIdentity.parse(
            doc.opt(raw, path, "identity", str, f"{enterprise}/it/idmz-relay")
        )
    except MalformedIdentityError as exc:
        doc.fail([*path, "identity"], str(exc))
    if identity.enterprise != enterprise:
        doc.fail([*path, "identity"], f"relay identity is outside enterprise {enterprise!r}")
    mode = doc.opt(raw, path, "on_audit_failure", str, "refuse")
    if mode not in set(AuditFailureMode):
        doc.fail(
            [*path, "on_audit_failure"], f"expected refuse or forward-and-alarm; found {mode!r}"
        )
    group = doc.label(raw.get("share_group", "idmz-relay"), [*path, "share_group"])
    return RelayPolicy(identity, group, AuditFailureMode(mode))


def load_policy(text: str, *, fmt: str | None = None, source: str = "") -> Policy:
    """Parse and validate a policy document; ``fmt`` is ``toml`` or ``yaml`` (by default from
    the ``source`` file name, else TOML). Raises `PolicyConfigError`."""
    if fmt is None:
        fmt = "yaml" if source.endswith((".yaml", ".yml")) else "toml"
    doc = PolicyText(text, fmt, source)
    data = parse_text(text, fmt, source)
    doc.only(data, [], _TOP_KEYS)
    version = doc.get(data, [], "version", int)
    if version != POLICY_VERSION:
        doc.fail(["version"], f"this idmz reads policy version {POLICY_VERSION}; found {version}")
    enterprise = doc.label(doc.get(data, [], "enterprise", str), ["enterprise"])

    zones_raw = doc.get(data, [], "zones", dict)
    doc.only(zones_raw, ["zones"], {z.value for z in Zone})
    zones = {}
    on_stale_crl = dict(STALE_CRL_DEFAULTS)
    for zone in Zone:
        raw = doc.get(zones_raw, ["zones"], zone.value, dict)
        doc.only(raw, ["zones", zone.value], {"description", "on_stale_crl"})
        zones[zone] = doc.opt(raw, ["zones", zone.value], "description", str, "")
        if "on_stale_crl" in raw:
            on_stale_crl[zone] = _stale_crl_mode(doc, raw, zone)

    classes = _device_classes(doc, data)
    assignments = {}
    for key, cls in doc.table(data, [], "assignments").items():
        prefix = _prefix(doc, key, ["assignments", key], enterprise)
        if doc.typed(cls, ["assignments", key], str) not in classes:
            doc.fail(["assignments", key], f"no device class named {cls!r}")
        assignments[prefix] = cls

    relay = _relay(doc, data, enterprise)
    consumers = {}
    for name, raw in doc.table(data, [], "consumers").items():
        path: list[str | int] = ["consumers", name]
        doc.label(name, path)
        if name == relay.identity.name:
            doc.fail(path, f"{name!r} is the relay's own identity; a consumer needs another name")
        raw = doc.typed(raw, path, dict)
        doc.only(raw, path, {"subscribe", "description", "publish", "sparkplug_groups"})
        if "publish" in raw:
            doc.fail([*path, "publish"], "IT consumers never publish; remove this key")
        prefixes = tuple(
            _prefix(doc, p, [*path, "subscribe", i], enterprise)
            for i, p in enumerate(doc.str_list(raw, path, "subscribe"))
        )
        groups = tuple(
            sparkplug_id(doc, g, [*path, "sparkplug_groups", i])
            for i, g in enumerate(doc.str_list(raw, path, "sparkplug_groups"))
        )
        consumers[name] = ConsumerRule(
            name, prefixes, doc.opt(raw, path, "description", str, ""), groups
        )

    schemas = _schemas(doc, data)
    limits = _limits(doc, data, schemas)
    for cls in classes.values():
        for i, sub in enumerate(cls.publish):
            if sub not in limits:
                doc.fail(
                    ["device_classes", cls.name, "publish", i],
                    f"sub-topic {sub!r} has no [limits.{sub!r}] entry",
                )

    return Policy(
        version=version,
        enterprise=enterprise,
        description=doc.opt(data, [], "description", str, ""),
        zones=MappingProxyType(zones),
        conduits=_conduits(doc, data),
        device_classes=MappingProxyType(classes),
        assignments=MappingProxyType(assignments),
        consumers=MappingProxyType(consumers),
        limits=MappingProxyType(limits),
        schemas=MappingProxyType(schemas),
        certificates=_certificates(doc, data),
        relay=relay,
        on_stale_crl=MappingProxyType(on_stale_crl),
        sparkplug=load_sparkplug(
            doc,
            data,
            enterprise=enterprise,
            classes=classes,
            assignments=assignments,
            max_bytes=MAX_MESSAGE_BYTES_CEILING,
        ),
    )


def _stale_crl_mode(doc: PolicyText, raw: dict[str, Any], zone: Zone) -> StaleCrlMode:
    path: list[str | int] = ["zones", zone.value, "on_stale_crl"]
    if zone not in STALE_CRL_DEFAULTS:
        doc.fail(
            path, "on_stale_crl applies to the zones whose clients connect to a broker: ot, it"
        )
    mode = doc.typed(raw["on_stale_crl"], path, str)
    if mode not in set(StaleCrlMode):
        doc.fail(path, f"expected fail-closed or keep-last; found {mode!r}")
    return StaleCrlMode(mode)
