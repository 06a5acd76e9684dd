"""Read ``[sparkplug]`` of a policy document (ADR 0110); `policies.loader` calls it.

    [sparkplug]
    host_id = "scada"                  # optional: the STATE the OT side publishes
    max_payload_bytes = 262144         # the other limits have defaults too
    [sparkplug.nodes."acme/plant1/stamping/line1/cell1/press-01"]
    group = "plant1"
    node = "press-01"
    devices = ["plc", "drive"]

Each key of ``nodes`` is a device identity whose class says ``sparkplug = true``; one (group,
node) belongs to one identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pki.errors import MalformedIdentityError
from pki.identity import DeviceIdentity, IdentityPrefix
from policies.document import DeviceClass
from policies.source import KeyPath, PolicyText
from policies.sparkplug import (
    SPARKPLUG_ID,
    STATE_GROUP,
    SparkplugLimits,
    SparkplugNode,
    SparkplugPolicy,
)

_KEYS = {"host_id", "max_payload_bytes", "max_metrics", "max_messages_per_s", "burst",
         "max_timestamp_skew_s", "nodes"}  # fmt: skip


def sparkplug_id(doc: PolicyText, value: Any, path: KeyPath) -> str:
    text = doc.typed(value, path, str)
    if not SPARKPLUG_ID.fullmatch(text):
        doc.fail(path, f"a Sparkplug id is [A-Za-z0-9][A-Za-z0-9_-]{{0,62}}; found {text!r}")
    return text


def _class_of(identity: DeviceIdentity, assignments: Mapping[IdentityPrefix, str]) -> str | None:
    levels = {p.levels: c for p, c in assignments.items()}
    own = tuple(identity.path.split("/"))
    for n in range(len(own), 0, -1):
        if own[:n] in levels:
            return levels[own[:n]]
    return None


def load_sparkplug(
    doc: PolicyText,
    data: Mapping[str, Any],
    *,
    enterprise: str,
    classes: Mapping[str, DeviceClass],
    assignments: Mapping[IdentityPrefix, str],
    max_bytes: int,
) -> SparkplugPolicy | None:
    if "sparkplug" not in data:
        return None
    path: list[str | int] = ["sparkplug"]
    raw = doc.typed(data["sparkplug"], path, dict)
    doc.only(raw, path, _KEYS)
    default = SparkplugLimits()
    limits = SparkplugLimits(
        *(
            doc.positive(raw, path, key, type(getattr(default, key)))
            if key in raw
            else getattr(default, key)
            for key in (
                "max_payload_bytes",
                "max_metrics",
                "max_messages_per_s",
                "burst",
                "max_timestamp_skew_s",
            )
        )
    )
    if limits.max_payload_bytes > max_bytes:
        doc.fail([*path, "max_payload_bytes"], f"at most {max_bytes}")
    host_id = None
    if "host_id" in raw:
        host_id = sparkplug_id(doc, raw["host_id"], [*path, "host_id"])
    nodes: dict[DeviceIdentity, SparkplugNode] = {}
    owners: dict[tuple[str, str], str] = {}
    for key, entry in doc.table(raw, path, "nodes").items():
        npath: list[str | int] = [*path, "nodes", key]
        try:
            identity = DeviceIdentity.parse(key)
        except MalformedIdentityError as exc:
            doc.fail(npath, str(exc))
        if identity.enterprise != enterprise:
            doc.fail(npath, f"{key!r} is outside enterprise {enterprise!r}")
        cls = _class_of(identity, assignments)
        if cls is None or not classes[cls].sparkplug:
            doc.fail(npath, f"{key!r} needs a device class with sparkplug = true; found {cls!r}")
        entry = doc.typed(entry, npath, dict)
        doc.only(entry, npath, {"group", "node", "devices"})
        group = sparkplug_id(doc, doc.get(entry, npath, "group", str), [*npath, "group"])
        if group == STATE_GROUP:
            doc.fail([*npath, "group"], f"{STATE_GROUP!r} is the host applications' namespace")
        node = sparkplug_id(doc, doc.get(entry, npath, "node", str), [*npath, "node"])
        devices = [
            sparkplug_id(doc, d, [*npath, "devices", i])
            for i, d in enumerate(doc.str_list(entry, npath, "devices"))
        ]
        if len(set(devices)) != len(devices):
            doc.fail([*npath, "devices"], "lists a device id twice")
        if (group, node) in owners:
            doc.fail(npath, f"edge node {group}/{node} already belongs to {owners[group, node]}")
        owners[group, node] = key
        nodes[identity] = SparkplugNode(identity, group, node, tuple(devices))
    return SparkplugPolicy(host_id, limits, MappingProxyType(nodes))
