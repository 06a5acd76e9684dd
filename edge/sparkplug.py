"""The gateway as a Sparkplug B edge node (``[uplink] format = "sparkplug"``, ADR 0110): the
translation from the gateway's messages to births, data and deaths. Pure, no I/O; the uplink
(`edge.uplink`) sends what it returns and keeps the bdSeq file.

The outbox keeps the gateway's envelopes as always (store and forward, ADR 0064); the uplink
turns each into an NDATA when it sends it, on the connection it sends it on:

* every connection starts with an NBIRTH: ``bdSeq`` (persisted across restarts, the same in the
  connection's will, the NDEATH), every metric known so far with its datatype, current value and
  properties (``engUnit``, ``isa95Path``: the identity path and the asset), and seq 0;
* a message's leaves become metrics ``<kind>/<asset>/<name>`` (telemetry tags by tag name,
  features and anomaly events by field): numbers as Double, booleans as Boolean, text as String;
* NDATA carries only what changed since it was last sent (on change), with the message's own
  timestamp; a message sent from the back-fill lane (written before this connection) is marked
  ``is_historical``;
* a metric the current birth does not define makes the uplink send a new NBIRTH first (same
  bdSeq, seq 0): hosts and the relay check data against the birth (aliases, datatypes).

>>> node = EdgeNodeState("plant1", "press-07", "acme/p/a/l/c/gw")
>>> birth_topic, _ = node.birth(bd_seq=3, now_ms=1)
>>> birth_topic
'spBv1.0/plant1/NBIRTH/press-07'
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policies.sparkplug import MessageType, edge_topic
from policies.sparkplug_codec import BOOLEAN, DOUBLE, STRING, UINT64, encode_sparkplug

BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"  # declared as the spec asks; no command ever reaches OT
_FIELD = {DOUBLE: "double_value", BOOLEAN: "boolean_value", STRING: "string_value"}
MAX_METRICS = 1_000  # metrics a gateway defines; births stay below the relay's default 2,000


@dataclass(slots=True)
class _Metric:
    datatype: int
    value: Any
    unit: str
    path: str


def _kind_of(value: Any) -> int | None:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int | float):
        return DOUBLE if math.isfinite(value) else None
    if isinstance(value, str):
        return STRING
    return None


def _leaves(prefix: str, data: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}/{key}"
        if isinstance(value, Mapping):
            yield from _leaves(name, value)
        elif not isinstance(value, list):
            yield name, value


def metrics_of(device: str, kind: str, data: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """(name, value, engineering unit, ISA-95 path) for each leaf of one message's ``data``."""
    out: list[tuple[str, Any, str, str]] = []
    if kind == "telemetry":
        for tag in data.get("tags", []):
            if isinstance(tag, Mapping) and isinstance(tag.get("name"), str):
                asset = str(tag.get("asset") or "")
                path = _isa95(tag, device, asset)
                name = f"telemetry/{asset + '/' if asset else ''}{tag['name']}"
                out.append((name, tag.get("value"), str(tag.get("unit") or ""), path))
        return out
    owner = data.get("asset")
    prefix = f"{kind}/{owner}" if isinstance(owner, str) else kind
    path = _isa95(data, device, owner if isinstance(owner, str) else "")
    rest = {k: v for k, v in data.items() if k not in ("asset", "path")}
    return [(name, value, "", path) for name, value in _leaves(prefix, rest)]


def _isa95(fields: Mapping[str, Any], device: str, asset: str) -> str:
    """The asset's ISA-95 path as the message gives it (``path``), else the gateway's
    identity path and the asset."""
    given = fields.get("path")
    if isinstance(given, str) and given:
        return given
    return f"{device}/{asset}" if asset else device


class EdgeNodeState:
    """What the edge node has told the current connection: the metric definitions and the last
    values sent, and the connection's seq. One per uplink; the uplink's loop only."""

    def __init__(self, group: str, node: str, device: str) -> None:
        self.group, self.node, self.device = group, node, device
        self._metrics: dict[str, _Metric] = {}
        self._born: set[str] = set()  # the names the current birth defined
        self._sent: dict[str, Any] = {}  # last value sent on this connection
        self._seq = 0
        self.bd_seq = 0

    def topic(self, mtype: MessageType) -> str:
        return edge_topic(self.group, mtype, self.node)

    def death(self, bd_seq: int, now_ms: int) -> tuple[str, bytes]:
        """The NDEATH, the connection's will (QoS 1, not retained)."""
        raw = encode_sparkplug(timestamp=now_ms, metrics=[
            {"name": BD_SEQ, "datatype": UINT64, "long_value": bd_seq}])  # fmt: skip
        return self.topic(MessageType.NDEATH), raw

    def birth(self, *, bd_seq: int, now_ms: int) -> tuple[str, bytes]:
        """An NBIRTH with every metric known so far; the connection's seq starts again."""
        self.bd_seq = bd_seq
        self._seq = 0
        self._born = set(self._metrics)
        self._sent = {n: m.value for n, m in self._metrics.items()}
        metrics: list[dict[str, Any]] = [
            {"name": BD_SEQ, "datatype": UINT64, "long_value": bd_seq},
            {"name": REBIRTH, "datatype": BOOLEAN, "boolean_value": False},
        ]
        for name, m in sorted(self._metrics.items()):
            spec: dict[str, Any] = {"name": name, "datatype": m.datatype, "properties": {
                "isa95Path": (STRING, "string_value", m.path)}}  # fmt: skip
            if m.unit:
                spec["properties"]["engUnit"] = (STRING, "string_value", m.unit)
            if m.value is None:
                spec["is_null"] = True
            else:
                spec[_FIELD[m.datatype]] = m.value
            metrics.append(spec)
        return self.topic(MessageType.NBIRTH), encode_sparkplug(
            timestamp=now_ms, seq=0, metrics=metrics
        )

    def learn(self, payload: bytes) -> tuple[list[dict[str, Any]], int, bool]:
        """Read one outbox envelope: the metrics it changes (not yet sent), its timestamp in
        ms, and whether the current birth lacks one of them (then: a new NBIRTH first)."""
        envelope = json.loads(payload)
        kind, data = str(envelope.get("kind", "")), envelope.get("data") or {}
        ts_ms = _ts_ms(str(envelope.get("ts", "")))
        changed = []
        for name, value, unit, path in metrics_of(self.device, kind, data):
            datatype = _kind_of(value) if value is not None else DOUBLE
            known = self._metrics.get(name)
            if datatype is None or (known is not None and known.datatype != datatype):
                continue  # a value the birth's datatype cannot carry is not sent
            if known is None and len(self._metrics) >= MAX_METRICS:
                continue
            self._metrics[name] = _Metric(datatype, value, unit or (known.unit if known else ""),
                                          path)  # fmt: skip
            if name not in self._sent or self._sent[name] != value:
                changed.append({"name": name, "datatype": datatype, "value": value})
        rebirth = any(c["name"] not in self._born for c in changed)
        return changed, ts_ms, rebirth

    def data(
        self, changed: list[dict[str, Any]], ts_ms: int, *, now_ms: int, historical: bool
    ) -> tuple[str, bytes]:
        """The NDATA for ``changed`` (from `learn`), with the connection's next seq: sent now
        (the payload timestamp, which the relay holds to its clock), measured at ``ts_ms``
        (each metric's timestamp)."""
        self._seq = (self._seq + 1) % 256
        metrics = []
        for c in changed:
            spec: dict[str, Any] = {
                "name": c["name"],
                "timestamp": ts_ms,
                "datatype": c["datatype"],
            }
            if c["value"] is None:
                spec["is_null"] = True
            else:
                spec[_FIELD[c["datatype"]]] = c["value"]
            if historical:
                spec["is_historical"] = True
            metrics.append(spec)
            self._sent[c["name"]] = c["value"]
        return self.topic(MessageType.NDATA), encode_sparkplug(
            timestamp=now_ms, seq=self._seq, metrics=metrics
        )


def _ts_ms(iso: str) -> int:
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0
