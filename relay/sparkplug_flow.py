"""What the worker does with an accepted Sparkplug message beyond forwarding it (ADR 0110):
the birth cache on IT, the audit records of births, deaths and sequence gaps, the counters.

Birth cache. A copy of each NBIRTH/DBIRTH goes to IT retained on
``$sparkplug/certificates/spBv1.0/<group>/<TYPE>/<node>[/<device>]`` (the form of Sparkplug 3.0
section 10 and Mosquitto 2.1's sparkplug-aware plugin), so a host application that connects
late reads the definitions it needs to decode NDATA without asking for a rebirth (an NCMD that
could never reach OT). The user property ``idmz-sparkplug-birth`` says ``online``; an NDEATH or
DDEATH publishes the same birth bytes again with ``stale``. The copy is the birth as received,
never re-encoded. It goes through the pipeline like any accepted message (audited in the batch
record, spooled when IT is away, in order with the node's messages) under a delivery token that
acknowledges nothing on OT: the original message carries the OT acknowledgement.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from audit.events import AuditEvent, Outcome
from policies import Decision
from policies.envelope import SPARKPLUG_BIRTH_PROPERTY
from policies.sparkplug import MessageType, SparkplugPolicy, parse_topic
from relay.inspector import Verdict
from relay.pipeline import Pipeline
from relay.sparkplug import SparkplugNote, SparkplugTracker
from relay.sparkplug_births import BirthStore
from relay.stats import WorkerStats

_log = logging.getLogger("relay.worker")
NO_ACK = (-1, 0, 0)  # an OT token of no connection: acknowledges nothing (relay.ot_source)
_CACHED = Decision.allow("birth cache copy of an accepted birth")
Provenance = Callable[[str, str], tuple[tuple[str, str], ...]]


class SparkplugFlow:
    """The worker's Sparkplug side effects. ``keep`` and ``accepted`` run on the OT reader's
    thread; ``sync_births``, ``take_events`` and ``requeue`` on the committer's. Built, it gives ``tracker`` back the births
    kept in ``births_dir`` before a restart (`relay.sparkplug_births`)."""

    def __init__(
        self, worker: str, stats: WorkerStats, tracker: SparkplugTracker, births_dir: Path,
        sparkplug: SparkplugPolicy,
    ) -> None:  # fmt: skip
        self._worker = worker
        self._stats = stats
        self._online = tracker.online
        self._lock = threading.Lock()
        self._events: list[AuditEvent] = []
        self._births = BirthStore(births_dir)
        restored = sum(
            tracker.restore(sparkplug.by_node[t.group, t.node], t, raw)
            for t, raw in self._births.kept(sparkplug)
        )
        if restored:
            _log.info("%s: %d Sparkplug birth(s) restored from %s", worker, restored, births_dir)
        with stats.lock:
            stats.sparkplug_nodes_online = tracker.online()

    def keep(self, topic: str, payload: bytes, verdict: Verdict) -> None:
        """Before the message enters the pipeline (the OT reader's thread): keep a birth or
        forget what a death ended, on disk, so that `sync_births` in the cycle that could
        acknowledge the message on OT has it."""
        note = verdict.sparkplug
        if note is None or note.type in (MessageType.NDATA, MessageType.DDATA):
            return
        parsed = parse_topic(topic)
        if parsed is not None:
            self._births.changed(parsed, payload)

    def sync_births(self) -> None:
        """The committer's, once a cycle, before anything is acknowledged on OT."""
        self._births.sync()

    def accepted(
        self, topic: str, payload: bytes, verdict: Verdict, now: float, pipeline: Pipeline,
        provenance: Provenance,
    ) -> None:  # fmt: skip
        """After the message entered the pipeline: its birth-cache copies, records, counters."""
        note = verdict.sparkplug
        if note is None or verdict.device is None:
            return
        device = verdict.device.path
        for cache_topic, birth, state in note.cache:
            digest = hashlib.sha256(f"{verdict.msg_id}\0{cache_topic}\0{state}".encode())
            msg_id = "spb-birth:" + digest.hexdigest()[:40]

            def props(dev: str, mid: str, state: str = state) -> tuple[tuple[str, str], ...]:
                return (*provenance(dev, mid), (SPARKPLUG_BIRTH_PROPERTY, state))

            cached = Verdict(_CACHED, verdict.device, msg_id)
            pipeline.receive(NO_ACK, cache_topic, birth, cached, now, props)
        events = self._events_for(device, topic, note, verdict.msg_id)
        self._stats.count_sparkplug(note.type, note.gap, self._online())
        if events:
            with self._lock:
                self._events += events

    def _events_for(
        self, device: str, topic: str, note: SparkplugNote, msg_id: str
    ) -> list[AuditEvent]:
        out = []
        base = {"node": note.node, "msg_id": msg_id, "worker": self._worker}
        if note.type is MessageType.NBIRTH:
            out.append(
                _event(device, "relay.sparkplug.birth", topic, {**base, "bd_seq": note.bd_seq})
            )
        elif note.type is MessageType.NDEATH:
            out.append(
                _event(device, "relay.sparkplug.death", topic, {**base, "bd_seq": note.bd_seq})
            )
        if note.gap is not None:
            expected, found = note.gap
            out.append(
                _event(
                    device,
                    "relay.sparkplug.gap",
                    topic,
                    {
                        **base,
                        "expected_seq": expected,
                        "seq": found,
                        "missing": (found - expected) % 256,
                    },
                    reason="sequence gap: messages of this node may have been lost before the relay",
                )
            )
        return out

    def take_events(self) -> list[AuditEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def requeue(self, events: Sequence[AuditEvent]) -> None:
        """The audit could not record them: first in the next cycle."""
        if events:
            with self._lock:
                self._events[:0] = events


def _event(
    actor: str, action: str, topic: str, details: dict[str, str | int | None], reason: str = ""
) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action=action,
        resource=topic[:512],
        outcome=Outcome.SUCCESS,
        reason=reason,
        details=details,
    )
