"""Sparkplug B 3.0 in the policy: the topic grammar, which identity is which edge node, the
broker grants that follow, the STATE the OT side shows and the birth cache's topics (ADR 0110).

A Sparkplug edge node publishes ``spBv1.0/<group>/<TYPE>/<node>[/<device>]`` (Sparkplug 3.0
section 4.1), not under its identity path. The policy maps each certificate identity to one
(group, node) and the device ids it may announce, in ``[sparkplug.nodes."<identity>"]``; its
device class must say ``sparkplug = true``. The rendered ACLs let that identity write exactly
its own node's NBIRTH, NDEATH, NDATA and its listed devices' DBIRTH, DDEATH, DDATA; nothing else,
never NCMD, DCMD or STATE. So on the OT broker the topic's (group, node) *is* the verified
sender, as the identity path is for JSON topics, and the relay maps it back with `route`.

>>> parse_topic("spBv1.0/plant1/DDATA/press-01/plc")
SparkplugTopic(group='plant1', type=<MessageType.DDATA: 'DDATA'>, node='press-01', device='plc')
>>> state_topic("scada")
'spBv1.0/STATE/scada'
>>> birth_cache_topic("spBv1.0/plant1/NBIRTH/press-01")
'$sparkplug/certificates/spBv1.0/plant1/NBIRTH/press-01'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from pki.identity import DeviceIdentity
from policies.decision import Decision, ReasonCode

NAMESPACE = "spBv1.0"
SPARKPLUG_PREFIX = NAMESPACE + "/"
# Mosquitto 2.1's sparkplug-aware plugin and Sparkplug 3.0 section 10 ("Sparkplug Aware MQTT
# Server") keep the births retained under this prefix; the relay does the same on the IT side.
BIRTH_CACHE_PREFIX = "$sparkplug/certificates/"
STATE_GROUP = "STATE"
# Group, node, device and host ids: what the spec allows (UTF-8 without / + #) narrowed to what
# is safe in ACL files and audit records.
SPARKPLUG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


class MessageType(StrEnum):
    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    NDATA = "NDATA"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    DDATA = "DDATA"
    DCMD = "DCMD"


M = MessageType
NODE_TYPES = (M.NBIRTH, M.NDEATH, M.NDATA)
DEVICE_TYPES = (M.DBIRTH, M.DDEATH, M.DDATA)
EDGE_TYPES = frozenset((*NODE_TYPES, *DEVICE_TYPES))  # what an edge node may publish
_TYPES = {t.value: t for t in MessageType}


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    group: str
    type: MessageType
    node: str
    device: str | None = None


def parse_topic(topic: str) -> SparkplugTopic | None:
    """The parts of a Sparkplug edge topic (any message type but STATE), or None."""
    parts = topic.split("/", 5)
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
        return None
    mtype = _TYPES.get(parts[2])
    if mtype is None or not all(SPARKPLUG_ID.fullmatch(p) for p in parts[1:2] + parts[3:]):
        return None
    device = parts[4] if len(parts) == 5 else None
    if (device is None) != (mtype in NODE_TYPES or mtype is M.NCMD):
        return None
    return SparkplugTopic(parts[1], mtype, parts[3], device)


def edge_topic(group: str, mtype: MessageType, node: str, device: str | None = None) -> str:
    return f"{NAMESPACE}/{group}/{mtype}/{node}" + (f"/{device}" if device else "")


def state_topic(host_id: str) -> str:
    """Where a primary host application's STATE lives (Sparkplug 3.0 section 4.1.2)."""
    return f"{NAMESPACE}/{STATE_GROUP}/{host_id}"


def state_payload(*, online: bool, timestamp_ms: int) -> bytes:
    """The STATE message (Sparkplug 3.0 section 5.4: UTF-8 JSON ``online``, ``timestamp``)."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()


def birth_cache_topic(topic: str) -> str:
    """The retained birth-cache topic for an NBIRTH or DBIRTH topic."""
    return BIRTH_CACHE_PREFIX + topic


@dataclass(frozen=True, slots=True)
class SparkplugNode:
    """One edge node: the identity whose certificate speaks for it, and what it may announce."""

    identity: DeviceIdentity
    group: str
    node: str
    devices: tuple[str, ...]

    def topics(self) -> list[str]:
        """Every topic this node may publish (the ACL's write grants), in a fixed order."""
        own = [edge_topic(self.group, t, self.node) for t in NODE_TYPES]
        return own + [
            edge_topic(self.group, t, self.node, d) for d in self.devices for t in DEVICE_TYPES
        ]

    def births(self) -> list[str]:
        """The birth-cache topics of this node and its devices (the relay's IT writes)."""
        node = [birth_cache_topic(edge_topic(self.group, M.NBIRTH, self.node))]
        return node + [
            birth_cache_topic(edge_topic(self.group, M.DBIRTH, self.node, d)) for d in self.devices
        ]


@dataclass(frozen=True, slots=True)
class SparkplugLimits:
    """What the relay accepts from one edge node (ADR 0110)."""

    max_payload_bytes: int = 262_144
    max_metrics: int = 2_000  # per payload, template members included
    max_messages_per_s: float = 50.0
    burst: int = 200
    max_timestamp_skew_s: float = 300.0  # payload timestamp against the relay's clock


@dataclass(frozen=True)
class SparkplugPolicy:
    """``[sparkplug]``: the nodes, the limits, and the primary host id whose STATE the OT side
    of the appliance publishes (None: none; edge nodes then must not wait for a host)."""

    host_id: str | None
    limits: SparkplugLimits
    nodes: Mapping[DeviceIdentity, SparkplugNode]
    by_node: Mapping[tuple[str, str], SparkplugNode] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_node = {(n.group, n.node): n for n in self.nodes.values()}
        object.__setattr__(self, "by_node", MappingProxyType(by_node))

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(sorted({n.group for n in self.nodes.values()}))

    def canonical(self) -> dict[str, Any]:
        lim = self.limits
        return {
            **({"host_id": self.host_id} if self.host_id else {}),
            "max_payload_bytes": lim.max_payload_bytes,
            "max_metrics": lim.max_metrics,
            "max_messages_per_s": lim.max_messages_per_s,
            "burst": lim.burst,
            "max_timestamp_skew_s": lim.max_timestamp_skew_s,
            "nodes": {
                i.path: {"group": n.group, "node": n.node, "devices": list(n.devices)}
                for i, n in self.nodes.items()
            },
        }


def route_sparkplug(
    sparkplug: SparkplugPolicy | None, topic: str
) -> tuple[SparkplugNode | None, SparkplugTopic | None, Decision]:
    """Who sent a Sparkplug message and may it: the node the policy maps the topic's (group,
    node) to, and the decision on the topic alone (the payload is checked afterwards)."""
    parsed = parse_topic(topic)
    if parsed is None:
        shown = ascii(topic[:120])
        return (
            None,
            None,
            Decision.deny(
                ReasonCode.SPARKPLUG_TOPIC_INVALID, f"{shown} is not a Sparkplug B edge topic"
            ),
        )
    node = None if sparkplug is None else sparkplug.by_node.get((parsed.group, parsed.node))
    if node is None:
        return (
            None,
            parsed,
            Decision.deny(
                ReasonCode.SPARKPLUG_NODE_UNKNOWN,
                f"no edge node {parsed.group}/{parsed.node} in the policy's [sparkplug.nodes]",
            ),
        )
    if parsed.type not in EDGE_TYPES:
        return (
            node,
            parsed,
            Decision.deny(
                ReasonCode.SPARKPLUG_COMMAND_FROM_OT,
                f"{parsed.type} never comes from an edge node: commands and STATE do not cross",
            ),
        )
    if parsed.device is not None and parsed.device not in node.devices:
        return (
            node,
            parsed,
            Decision.deny(
                ReasonCode.SPARKPLUG_DEVICE_NOT_ALLOWED,
                f"edge node {node.group}/{node.node} may not announce device {parsed.device!r}",
            ),
        )
    return node, parsed, Decision.allow("an edge node publishes its own Sparkplug topic")
