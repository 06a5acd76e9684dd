"""Each Sparkplug B edge node's session as the relay sees it: pure, no I/O, time passed in
(ADR 0110).

`SparkplugTracker.judge` decides one message of a node the policy names (`policies.sparkplug.
route` found it) and returns the `Decision` and, when accepted, a `SparkplugNote`: what the
worker audits and counts (births, deaths, sequence gaps) and which birth-cache copies it
publishes on the IT side. The stateless checks are `policies.sparkplug_checks`'; what needs
history is here:

* a node's session starts with its NBIRTH (bdSeq, the metric definitions, seq) and ends with
  an NDEATH whose bdSeq is the birth's; an NDEATH of another session (the will of an older
  connection, published after the new birth) is refused and changes nothing;
* NDATA, DBIRTH, DDATA and DDEATH need the node's birth (and DDATA its device's); their metrics
  are checked against the birth that defined them (aliases, datatypes);
* seq runs 0-255 per node; a jump is accepted and reported as a gap (possible loss: QoS 0 data
  may be lost on the OT broker, and the host must know).

State is bounded: only nodes of the policy get any (the route refuses every other topic before
this runs), a birth's definitions are bounded by ``max_metrics``, a node's devices by its
listed ids, and the kept birth payloads by ``max_payload_bytes`` each. One node's messages
touch only that node's state, and a refused message touches none (it is decided first).
After a relay restart the worker gives the tracker the births it kept (`restore`, from
`relay.sparkplug_births`): no NCMD rebirth request can reach OT (ADR 0110), so the relay
replays what it knew instead. Without a kept birth, data is refused as ``sparkplug_no_birth``
until the node's next NBIRTH. The first message after a restore starts the seq count again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.decision import Decision, ReasonCode
from policies.errors import MalformedPayloadError
from policies.sparkplug import (
    MessageType,
    SparkplugNode,
    SparkplugPolicy,
    SparkplugTopic,
    birth_cache_topic,
    edge_topic,
)
from policies.sparkplug_checks import BirthDefs, Checked, check_metric_refs, check_sparkplug_payload
from policies.sparkplug_codec import decode_sparkplug

M = MessageType
_ACCEPTED = Decision.allow("Sparkplug payload accepted")
ONLINE, STALE = "online", "stale"


@dataclass(slots=True)
class _Device:
    defs: BirthDefs
    birth: bytes
    topic: str
    online: bool = True


@dataclass(slots=True)
class _Node:
    bd_seq: int
    seq: int
    defs: BirthDefs
    birth: bytes
    topic: str
    online: bool = True
    devices: dict[str, _Device] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SparkplugNote:
    """What an accepted Sparkplug message changed: for the audit, the metrics and the cache.
    ``cache`` holds (birth-cache topic, the birth's bytes as received, ``online``|``stale``)."""

    node: str  # "<group>/<node>"
    type: MessageType
    device: str | None
    gap: tuple[int, int] | None = None  # (expected seq, received seq)
    cache: tuple[tuple[str, bytes, str], ...] = ()
    bd_seq: int | None = None


class SparkplugTracker:
    """Per-node sessions for one worker (not thread-safe: the OT reader's thread only)."""

    def __init__(self, sparkplug: SparkplugPolicy) -> None:
        self.limits = sparkplug.limits
        self._nodes: dict[tuple[str, str], _Node] = {}
        # node -> [tokens, last refill]: max_messages_per_s with burst, per node
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def online(self) -> int:
        return sum(1 for n in self._nodes.values() if n.online)

    def _admit(self, key: tuple[str, str], now: float) -> bool:
        rate, burst = self.limits.max_messages_per_s, float(self.limits.burst)
        bucket = self._buckets.setdefault(key, [burst, now])
        bucket[0] = min(burst, bucket[0] + max(0.0, now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True

    def judge(
        self, node: SparkplugNode, topic: SparkplugTopic, raw: bytes, *, now: float, now_ms: int
    ) -> tuple[Decision, SparkplugNote | None]:
        key = (node.group, node.node)
        label = f"{node.group}/{node.node}"
        if not self._admit(key, now):
            return Decision.deny(
                ReasonCode.RATE_LIMITED,
                f"edge node {label} over {self.limits.max_messages_per_s:g} msg/s "
                f"(burst {self.limits.burst})",
            ), None
        checked = check_sparkplug_payload(self.limits, topic.type, raw, now_ms=now_ms)
        if isinstance(checked, Decision):
            return checked, None
        mtype, state = topic.type, self._nodes.get(key)
        if mtype is M.NBIRTH:
            return self._birth(key, label, node, checked, raw)
        if mtype is M.NDEATH:
            return self._death(label, state, checked)
        if state is None or not state.online:
            return Decision.deny(
                ReasonCode.SPARKPLUG_NO_BIRTH, f"{mtype} from {label} before its NBIRTH"
            ), None
        seq = checked.seq if checked.seq is not None else 0
        expected = (state.seq + 1) % 256
        gap = None if seq == expected or state.seq < 0 else (expected, seq)
        device = topic.device
        note = SparkplugNote(label, mtype, device, gap)
        if mtype is M.NDATA:
            refused = check_metric_refs(state.defs, checked.refs, mtype)
            if refused is not None:
                return refused, None
        elif mtype is M.DBIRTH and device is not None and checked.defs is not None:
            dtopic = birth_cache_topic(edge_topic(node.group, M.DBIRTH, node.node, device))
            state.devices[device] = _Device(checked.defs, raw, dtopic)
            note = SparkplugNote(label, mtype, device, gap, ((dtopic, raw, ONLINE),))
        else:  # DDATA, DDEATH
            known = state.devices.get(device or "")
            if known is None or not known.online:
                return Decision.deny(
                    ReasonCode.SPARKPLUG_NO_BIRTH, f"{mtype} of {label}/{device} before its DBIRTH"
                ), None
            if mtype is M.DDATA:
                refused = check_metric_refs(known.defs, checked.refs, mtype)
                if refused is not None:
                    return refused, None
            else:
                known.online = False
                note = SparkplugNote(
                    label, mtype, device, gap, ((known.topic, known.birth, STALE),)
                )
        state.seq = seq
        return _ACCEPTED, note

    def restore(self, node: SparkplugNode, topic: SparkplugTopic, raw: bytes) -> bool:
        """Take back a birth this worker accepted before it restarted (kept by
        `relay.sparkplug_births`); its age does not matter, the rest is checked again. The
        node's seq is unknown until its next message. False when it no longer passes."""
        key = (node.group, node.node)
        checked = check_sparkplug_payload(self.limits, topic.type, raw, now_ms=_kept_ms(raw))
        if isinstance(checked, Decision) or checked.defs is None:
            return False
        if topic.type is M.NBIRTH:
            self._birth(key, f"{node.group}/{node.node}", node, checked, raw)
        elif topic.device is not None and key in self._nodes:
            dtopic = birth_cache_topic(edge_topic(node.group, M.DBIRTH, node.node, topic.device))
            self._nodes[key].devices[topic.device] = _Device(checked.defs, raw, dtopic)
        else:
            return False
        self._nodes[key].seq = -1
        return True

    def _birth(
        self, key: tuple[str, str], label: str, node: SparkplugNode, checked: Checked, raw: bytes
    ) -> tuple[Decision, SparkplugNote | None]:
        if checked.defs is None or checked.bd_seq is None or checked.seq is None:
            return Decision.deny(ReasonCode.SPARKPLUG_BIRTH_INVALID, "NBIRTH incomplete"), None
        old = self._nodes.get(key)
        # The devices of the previous session are gone until they are born again.
        cache = [(d.topic, d.birth, STALE) for d in old.devices.values()] if old else []
        topic = birth_cache_topic(edge_topic(node.group, M.NBIRTH, node.node))
        self._nodes[key] = _Node(checked.bd_seq, checked.seq, checked.defs, raw, topic)
        cache.append((topic, raw, ONLINE))
        return _ACCEPTED, SparkplugNote(
            label, M.NBIRTH, None, cache=tuple(cache), bd_seq=checked.bd_seq
        )

    def _death(
        self, label: str, state: _Node | None, checked: Checked
    ) -> tuple[Decision, SparkplugNote | None]:
        if state is None:  # no birth seen (a relay restart): forwarded; hosts check bdSeq
            return _ACCEPTED, SparkplugNote(label, M.NDEATH, None, bd_seq=checked.bd_seq)
        if checked.bd_seq != state.bd_seq:
            return Decision.deny(
                ReasonCode.SPARKPLUG_BDSEQ_MISMATCH,
                f"NDEATH of {label} carries bdSeq {checked.bd_seq}; the current birth's is "
                f"{state.bd_seq} (the will of an older session)",
            ), None
        cache = []
        if state.online:
            cache.append((state.topic, state.birth, STALE))
            cache += [(d.topic, d.birth, STALE) for d in state.devices.values() if d.online]
        state.online = False
        for d in state.devices.values():
            d.online = False
        return _ACCEPTED, SparkplugNote(
            label, M.NDEATH, None, cache=tuple(cache), bd_seq=checked.bd_seq
        )


def _kept_ms(raw: bytes) -> int:
    """A kept birth's own timestamp, so the skew check passes for its age alone."""
    try:
        return int(decode_sparkplug(raw).timestamp)
    except MalformedPayloadError:
        return 0
