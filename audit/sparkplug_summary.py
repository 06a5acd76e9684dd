"""The Sparkplug B part of the compliance report (ADR 0110): per edge node, from the relay's
``relay.sparkplug.*`` records, its births, deaths, sequence gaps (possible loss) and whether
its last record was a birth (online) or a death (offline); and the STATE the OT side showed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_NODES = 10_000  # a report stays bounded whatever the log holds
PREFIX = "relay.sparkplug."


@dataclass
class SparkplugSummary:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_online: bool | None = None  # the last STATE the appliance published on OT

    def add(self, entry: dict[str, Any]) -> None:
        action = str(entry["action"])
        if not action.startswith(PREFIX):
            return
        kind = action[len(PREFIX) :]
        if kind == "state":
            self.host_online = bool((entry.get("after") or {}).get("online"))
            return
        details = entry.get("details") or {}
        name = str(details.get("node", "unknown"))
        node = self.nodes.get(name)
        if node is None:
            if len(self.nodes) >= MAX_NODES:
                return
            node = self.nodes[name] = {"identity": entry.get("actor"), "births": 0, "deaths": 0,
                                       "gaps": 0, "missing": 0, "online": False}  # fmt: skip
        if kind == "birth":
            node["births"] += 1
            node["online"] = True
        elif kind == "death":
            node["deaths"] += 1
            node["online"] = False
        elif kind == "gap":
            node["gaps"] += 1
            node["missing"] += int(details.get("missing", 0))

    def to_json(self) -> dict[str, Any]:
        online = sum(1 for n in self.nodes.values() if n["online"])
        return {
            "nodes_online": online,
            "nodes_offline": len(self.nodes) - online,
            "births": sum(n["births"] for n in self.nodes.values()),
            "sequence_gaps": sum(n["gaps"] for n in self.nodes.values()),
            "host_state_online": self.host_online,
            "nodes": dict(sorted(self.nodes.items())),
        }
