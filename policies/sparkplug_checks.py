"""The checks one Sparkplug B payload must pass, without state: size, protobuf, metric count,
sequence number, timestamp, and a birth's own rules; and a data message's metrics against the
birth that defined them (Sparkplug 3.0 chapter 6; ADR 0110).

`check_sparkplug_payload` is total: whatever the bytes, it returns a `Checked` view or a refusal
`Decision`. The relay's per-node state (`relay.sparkplug`) decides what needs history: which
birth is current, bdSeq, sequence gaps. Refusal texts name metrics by position, never by value.

>>> from policies.sparkplug_codec import UINT64, encode_sparkplug
>>> raw = encode_sparkplug(timestamp=1000, seq=0, metrics=[{"name": "bdSeq", "datatype": UINT64, "long_value": 7}])
>>> check_sparkplug_payload(SparkplugLimits(), MessageType.NBIRTH, raw, now_ms=1000).bd_seq
7
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.decision import Decision, ReasonCode
from policies.errors import MalformedPayloadError
from policies.sparkplug import MessageType, SparkplugLimits
from policies.sparkplug_codec import (
    INT64,
    LAST_DATATYPE,
    UINT64,
    VALUE_FIELD,
    decode_sparkplug,
)

M = MessageType
BD_SEQ = "bdSeq"
_BIRTHS = (M.NBIRTH, M.DBIRTH)
# A metric as a data message refers to it: (name or None, alias or None, declared datatype or 0,
# the value field set or None, is_null).
MetricRef = tuple[str | None, int | None, int, str | None, bool]


@dataclass(frozen=True, slots=True)
class BirthDefs:
    """What a birth declared: each metric's datatype by name and by alias."""

    names: Mapping[str, int]
    aliases: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class Checked:
    """A payload that passed the stateless checks."""

    seq: int | None
    timestamp: int | None
    bd_seq: int | None  # NBIRTH and NDEATH
    defs: BirthDefs | None  # births
    refs: tuple[MetricRef, ...]  # data messages


def _deny(code: ReasonCode, reason: str) -> Decision:
    return Decision.deny(code, reason)


def _count(metrics: Any, limit: int) -> int:
    """Metrics, template members included, stopping past ``limit``."""
    total = len(metrics)
    for m in metrics:
        if total > limit:
            break
        if m.WhichOneof("value") == "template_value":
            total += _count(m.template_value.metrics, limit - total)
    return total


def check_sparkplug_payload(
    limits: SparkplugLimits, mtype: MessageType, raw: bytes, *, now_ms: int
) -> Checked | Decision:
    """The stateless checks of one payload of type ``mtype`` received at ``now_ms``."""
    if len(raw) > limits.max_payload_bytes:
        return _deny(
            ReasonCode.PAYLOAD_TOO_LARGE,
            f"{len(raw)} bytes of Sparkplug {mtype}; the limit is {limits.max_payload_bytes}",
        )
    try:
        payload = decode_sparkplug(raw)
    except MalformedPayloadError as exc:
        return _deny(ReasonCode.SPARKPLUG_MALFORMED, f"{mtype}: {exc}")
    metrics = payload.metrics
    if _count(metrics, limits.max_metrics) > limits.max_metrics:
        return _deny(
            ReasonCode.SPARKPLUG_TOO_MANY_METRICS,
            f"{mtype} holds more than {limits.max_metrics} metrics",
        )
    seq = payload.seq if payload.HasField("seq") else None
    if mtype is not M.NDEATH and (seq is None or seq > 255):
        return _deny(ReasonCode.SPARKPLUG_SEQ_INVALID, f"{mtype} needs a seq 0-255; found {seq}")
    timestamp = payload.timestamp if payload.HasField("timestamp") else None
    # An NDEATH is the MQTT will, written at connect time: its timestamp may be old.
    if mtype is not M.NDEATH:
        skew_ms = limits.max_timestamp_skew_s * 1000
        if timestamp is None or abs(timestamp - now_ms) > skew_ms:
            return _deny(
                ReasonCode.SPARKPLUG_TIMESTAMP_INVALID,
                f"{mtype} timestamp {timestamp} is missing or more than "
                f"{limits.max_timestamp_skew_s:g} s from the relay's clock",
            )
    bd_seq = None
    if mtype in (M.NBIRTH, M.NDEATH):
        bd_seq = _bd_seq(metrics)
        if bd_seq is None:
            return _deny(
                ReasonCode.SPARKPLUG_BIRTH_INVALID,
                f"{mtype} needs a bdSeq metric (Int64/UInt64, 0-255)",
            )
    if mtype in _BIRTHS:
        defs = _birth_defs(metrics)
        if isinstance(defs, Decision):
            return defs
        return Checked(seq, timestamp, bd_seq, defs, ())
    refs = tuple(
        (
            m.name if m.HasField("name") else None,
            m.alias if m.HasField("alias") else None,
            m.datatype,
            m.WhichOneof("value"),
            m.is_null,
        )
        for m in metrics
    )
    return Checked(seq, timestamp, bd_seq, None, refs)


def _bd_seq(metrics: Any) -> int | None:
    for m in metrics:
        if m.name == BD_SEQ:
            ok = m.datatype in (INT64, UINT64) and m.WhichOneof("value") == "long_value"
            return int(m.long_value) if ok and m.long_value <= 255 else None
    return None


def _birth_defs(metrics: Any) -> BirthDefs | Decision:
    """Every metric of a birth has a unique name and a known datatype; aliases are unique."""
    names: dict[str, int] = {}
    aliases: dict[int, int] = {}
    for i, m in enumerate(metrics):
        datatype = m.datatype
        if not m.name or not 0 < datatype <= LAST_DATATYPE:
            return _deny(
                ReasonCode.SPARKPLUG_BIRTH_INVALID,
                f"birth metric #{i} needs a name and a datatype 1-{LAST_DATATYPE}",
            )
        if m.name in names:
            return _deny(ReasonCode.SPARKPLUG_BIRTH_INVALID, f"birth metric #{i}: name repeated")
        names[m.name] = datatype
        if m.HasField("alias"):
            if m.alias in aliases:
                return _deny(
                    ReasonCode.SPARKPLUG_BIRTH_INVALID, f"birth metric #{i}: alias repeated"
                )
            aliases[m.alias] = datatype
        kind = m.WhichOneof("value")
        if kind is not None and kind != VALUE_FIELD.get(datatype, kind):
            return _deny(
                ReasonCode.SPARKPLUG_DATATYPE_MISMATCH,
                f"birth metric #{i} declares datatype {datatype} but carries {kind}",
            )
    return BirthDefs(names, aliases)


def check_metric_refs(
    defs: BirthDefs, refs: tuple[MetricRef, ...], mtype: MessageType
) -> Decision | None:
    """A data message's metrics against the birth: each is named or aliased there, its declared
    datatype (when sent) and its value field are the birth's. None when all are."""
    names, aliases = defs.names, defs.aliases
    for i, (name, alias, datatype, kind, is_null) in enumerate(refs):
        declared = aliases.get(alias) if alias is not None else None
        if declared is None and name is not None:
            declared = names.get(name)
        if declared is None:
            what = f"alias {alias}" if alias is not None else "its name"
            return _deny(
                ReasonCode.SPARKPLUG_METRIC_UNDEFINED,
                f"{mtype} metric #{i}: {what} was not defined by the birth",
            )
        if (datatype and datatype != declared) or (
            kind is not None and not is_null and kind != VALUE_FIELD.get(declared, kind)
        ):
            return _deny(
                ReasonCode.SPARKPLUG_DATATYPE_MISMATCH,
                f"{mtype} metric #{i} is not the datatype {declared} its birth declared",
            )
    return None
