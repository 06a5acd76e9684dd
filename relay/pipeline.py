"""The relay's core: each message's state and the commit cycle, without sockets, threads or files.

Every message from OT is an `Item` whose `ItemState` moves only through `advance` (the table
`NEXT` is the whole state machine; anything else is a bug and raises `PipelineError`)::

    RECEIVED --dedup--> DUPLICATE ---audit--> DUPLICATE_RECORDED --+
    RECEIVED --audit--> FORWARDED --IT ack--> DELIVERED -----------+
       |                   |  \\--IT refusal--> DEAD --letter kept--> BURIED --+
       |                   \\--IT down--> SPOOLED / HELD                      |
       +--audit--> SPOOLED --fsync--> STORED -------------------------------+--> ACKED (on OT)
       +--audit--> HELD (spool full) --retry--> SPOOLED                      |
    REFUSED ---audit--> REFUSAL_RECORDED ------------------------------------+

Only the states in `SAFE` may be acknowledged on OT, and every one of them is past its audit
record (ADR 0050): nothing is forwarded, spooled or acknowledged before that record is durable,
and a device that has anything spooled or held never goes direct, so its messages reach IT in
arrival order (ADR 0052).

`Pipeline.cycle` is one commit cycle: the IT acknowledgements, the group commit of the audit
records, routing in arrival order, the retention and spool fsyncs, then one OT acknowledgement
for everything that became safe. The I/O is behind `relay.ports`; the worker runs the cycle on
its committer thread, the tests run it on in-memory fakes.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from enum import IntEnum

from audit.events import AuditEvent
from relay import ports
from relay.config import AcceptedAudit
from relay.deadletter import DeadLetter, dead_letter_event, refused_by_it
from relay.errors import PipelineError, SpoolFullError
from relay.inspector import Verdict
from relay.ports import DeadLetterStore, Dedup, Fields, ITPublisher, OTAcks, Retainer, SpoolAppender
from relay.records import AcceptedLine, Recorder, refusal_event
from relay.spool import SpoolRecord
from relay.stats import WorkerStats

_log = logging.getLogger("relay.worker")


class ItemState(IntEnum):
    RECEIVED = 0  # accepted by the inspection; its audit record is not written yet
    REFUSED = 1  # refused by the inspection; its audit record is not written yet
    DUPLICATE = 2  # already safe here or in another worker; its record is not written yet
    HELD = 3  # audited; the spool is full: waits, unacknowledged
    FORWARDED = 4  # audited, published to IT, waiting for the PUBACK
    SPOOLED = 5  # audited, appended to the spool, waiting for the fsync
    DEAD = 6  # audited, refused by IT: its dead letter waits for its own record and fsync
    DELIVERED = 7  # IT acknowledged it
    STORED = 8  # its spool record is fsynced (the drain sends it later, in order)
    BURIED = 9  # its dead letter is recorded and kept
    REFUSAL_RECORDED = 10
    DUPLICATE_RECORDED = 11
    ACKED = 12  # acknowledged on OT: done


S = ItemState
SAFE = frozenset({S.DELIVERED, S.STORED, S.BURIED, S.REFUSAL_RECORDED, S.DUPLICATE_RECORDED})
NEXT: dict[ItemState, frozenset[ItemState]] = {
    S.RECEIVED: frozenset({S.DUPLICATE, S.FORWARDED, S.SPOOLED, S.HELD}),
    S.REFUSED: frozenset({S.REFUSAL_RECORDED}),
    S.DUPLICATE: frozenset({S.DUPLICATE_RECORDED}),
    S.HELD: frozenset({S.SPOOLED, S.DELIVERED}),
    # An IT ack can still be queued when the connection's loss spooled the message: it is at IT.
    S.FORWARDED: frozenset({S.DELIVERED, S.DEAD, S.SPOOLED, S.HELD}),
    S.SPOOLED: frozenset({S.STORED, S.DELIVERED}),
    S.DEAD: frozenset({S.BURIED}),
    **{s: frozenset({S.ACKED}) for s in SAFE},
    S.ACKED: frozenset(),
}
# The same table as bit masks indexed by state: ``advance`` and the SAFE test stay at C speed on
# the hot path (an enum member's hash is a Python call).
_NEXT_MASK = [sum(1 << n for n in NEXT[s]) for s in ItemState]
_SAFE_MASK = sum(1 << s for s in SAFE)


class Item:
    """One message between its delivery from OT and its acknowledgement there."""

    __slots__ = (
        "code", "device", "letter", "msg_id", "payload", "props", "reason", "seq", "state",
        "t0", "token", "topic",
    )  # fmt: skip

    def __init__(
        self, seq: int, token: object, topic: str, payload: bytes, device: str, msg_id: str,
        t0: float, state: ItemState,
    ) -> None:  # fmt: skip
        self.seq, self.token, self.topic, self.payload = seq, token, topic, payload
        self.device, self.msg_id, self.t0, self.state = device, msg_id, t0, state
        self.props: tuple[tuple[str, str], ...] = ()
        self.code = self.reason = ""  # the refusal's stable code and text
        self.letter: tuple[DeadLetter, bool] | None = None  # (letter, kept) once DEAD

    def fields(self) -> Fields:
        return (self.topic, self.device, self.msg_id, self.props, self.payload)

    def __repr__(self) -> str:
        return f"Item({self.seq}, {self.device}, {self.msg_id}, {self.state.name})"


def advance(item: Item, new: ItemState) -> None:
    """The only place an item changes state."""
    if not _NEXT_MASK[item.state] >> new & 1:
        raise PipelineError(f"{item!r} cannot go to {new.name}")
    item.state = new


class Pipeline:
    """The per-message logic of one worker. ``receive`` runs on the OT reader's thread,
    ``it_down`` on the IT link's, ``cycle`` on the committer's; ``lock`` (shared with the
    worker's drain) guards the routing state. It starts no thread and opens nothing."""

    def __init__(
        self, name: str, *, ot: OTAcks, it: ITPublisher, spool: SpoolAppender, dedup: Dedup,
        audit: ports.AuditPort, letters: DeadLetterStore, retainer: Retainer, stats: WorkerStats,
        policy_hash: str, accepted_audit: AcceptedAudit, audit_batch_max: int,
        refuse_on_audit_failure: bool, spooled: Counter[str],
        clock: Callable[[], float], wall_clock: Callable[[], float],
        on_broken_audit: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self._ot, self._it, self._spool, self._dedup = ot, it, spool, dedup
        self._letters, self._retainer, self.stats = letters, retainer, stats
        self.batch_max = audit_batch_max
        self._clock, self._wall = clock, wall_clock
        self._recorder = Recorder(
            audit, stats, worker=name, policy_hash=policy_hash, accepted_audit=accepted_audit,
            batch_max=audit_batch_max, refuse_on_failure=refuse_on_audit_failure,
            on_broken=on_broken_audit,
        )  # fmt: skip
        self.lock = threading.Lock()
        self.spooled_count = spooled  # per device, in the spool and not yet at IT
        self._seq = itertools.count(1)  # next() is atomic: no lock per message
        self._inproc: set[tuple[str, str]] = set()  # accepted here, not yet acknowledged
        self._refusals: deque[Item] = deque()
        self._accepted: deque[Item] = deque()
        self._dead: deque[Item] = deque()  # refused by IT: their letters wait for a record
        self._held: deque[Item] = deque()
        self._unsynced: list[Item] = []
        self._waiting: dict[int, Item] = {}  # audited, not yet safe (for the inflight gauge)

    # -- OT reader thread -------------------------------------------------------------------

    def receive(
        self, token: object, topic: str, payload: bytes, verdict: Verdict, now: float,
        props: Callable[[str, str], tuple[tuple[str, str], ...]],
    ) -> bool:  # fmt: skip
        """Take one delivery; True when the committer should run now."""
        device = verdict.device.path if verdict.device is not None else ""
        seq = next(self._seq)
        if not verdict.accepted:
            item = Item(seq, token, topic, payload, device, verdict.msg_id, now, S.REFUSED)
            item.code, item.reason = verdict.reason_code, verdict.reason
            self.stats.count_refusal(item.code, device)
            self._refusals.append(item)
            return True
        key2 = (device, verdict.msg_id)
        if key2 in self._inproc:  # the shared window is asked per batch (_drop_duplicates)
            item = Item(seq, token, topic, payload, device, verdict.msg_id, now, S.DUPLICATE)
            self.stats.count_duplicate()
            self._accepted.append(item)
            return True
        self._inproc.add(key2)
        item = Item(seq, token, topic, payload, device, verdict.msg_id, now, S.RECEIVED)
        item.props = props(device, item.msg_id)
        self._accepted.append(item)  # routed by the committer once audited
        return len(self._accepted) >= self.batch_max

    def ot_down(self) -> None:
        with self.lock:  # deliveries of a lost connection come again; forget them here
            self._inproc.clear()

    # -- IT link thread ---------------------------------------------------------------------

    def it_down(self, refs: Sequence[object]) -> None:
        """The IT connection dropped with ``refs`` unacknowledged: spool ours, in order."""
        with self.lock:
            for ref in refs:
                if isinstance(ref, Item) and ref.state is S.FORWARDED:
                    self._spool_locked(ref)

    # -- committer thread -------------------------------------------------------------------

    def cycle(
        self, acks: Iterable[tuple[Item, int]], *, extra_events: Sequence[AuditEvent] = (),
        extra_retained: Sequence[Fields] = (), after_audit: Callable[[], None] | None = None,
    ) -> bool:  # fmt: skip
        """One commit cycle. ``acks``: the IT broker's answers to our direct publishes since the
        last cycle. ``extra_events`` (the worker's drain dead letters) go into the same group
        commit; ``extra_retained`` (what IT acknowledged from the drain) into the same
        retention fsync, which ``after_audit`` precedes. False: the audit could not record (with
        ``on_audit_failure = "refuse"``), nothing moved and the cycle is to be retried."""
        touched: list[Item] = []
        retained: list[Fields] = list(extra_retained)
        for item, code in acks:
            self._it_answer(item, code, touched, retained)
        try:
            audited = self._commit_batch(touched, extra_events)  # IT gets it sooner
        finally:
            try:
                if retained:  # one fdatasync per cycle, before the cursor moves or OT is acked
                    self._retainer.retain(retained)
            finally:
                if after_audit is not None:
                    after_audit()
        with self.lock:
            if self._spool.dirty:
                self._spool.sync()  # raises before anything below counts as safe
            newly, self._unsynced = self._unsynced, []
        for item in newly:
            if item.state is S.SPOOLED:
                advance(item, S.STORED)
                touched.append(item)
        self._complete(touched)
        return audited

    def _it_answer(self, item: Item, code: int, touched: list[Item], kept: list[Fields]) -> None:
        if code < 0x80:
            if item.state in (S.FORWARDED, S.SPOOLED, S.HELD):
                advance(item, S.DELIVERED)
                touched.append(item)
                kept.append(item.fields())
        elif item.state is S.FORWARDED:  # permanent (MQTT 5 §2.4): never retried, kept aside
            advance(item, S.DEAD)
            letter = refused_by_it(item.device, item.msg_id, item.topic, item.payload, code)
            item.letter = (letter, self._letters.append(letter, self._wall()))
            self._dead.append(item)

    def _commit_batch(self, touched: list[Item], extra: Sequence[AuditEvent]) -> bool:
        """Audit what arrived (and the dead letters), then route it in arrival order."""
        self._retry_held()
        refusals = [self._refusals.popleft() for _ in range(len(self._refusals))]
        accepted = [self._accepted.popleft() for _ in range(len(self._accepted))]
        dead = [self._dead.popleft() for _ in range(len(self._dead))]
        self._drop_duplicates(accepted)
        if not (refusals or accepted or dead or extra):
            return True
        if not self._record(refusals, accepted, dead, extra):
            self._refusals.extendleft(reversed(refusals))
            self._accepted.extendleft(reversed(accepted))
            self._dead.extendleft(reversed(dead))
            return False
        for item in refusals:
            advance(item, S.REFUSAL_RECORDED)
        for item in accepted:
            if item.state is S.DUPLICATE:
                advance(item, S.DUPLICATE_RECORDED)
            else:
                self._route(item)  # audited: now it may leave, in arrival order
        self._it.flush()
        touched.extend(refusals)
        touched.extend(accepted)
        if dead:
            self._letters.sync()
            for item in dead:
                advance(item, S.BURIED)
            touched.extend(dead)
            lost = sum(1 for i in dead if i.letter is not None and not i.letter[1])
            if lost:
                self._letters.alarm_lost(lost)
            self.stats.count_dead_letters(len(dead), lost)
        return True

    def _drop_duplicates(self, accepted: list[Item]) -> None:
        """Mark the messages of a batch that are already safe (here or in another worker),
        with one query to the shared window for the whole batch."""
        fresh = [i for i in accepted if i.state is S.RECEIVED]
        if not fresh:
            return
        known = self._dedup.seen_many([(i.device, i.msg_id) for i in fresh])
        if not known:
            return
        for item in fresh:
            if (item.device, item.msg_id) in known:
                advance(item, S.DUPLICATE)
                self.stats.count_duplicate()
        with self.lock:
            self._inproc.difference_update(known)

    def _route(self, item: Item) -> None:
        """Direct to IT when possible, else spool; keeps each device's order."""
        with self.lock:
            direct = not self._held and self._it.up and not self.spooled_count.get(item.device)
            if direct:  # before publishing: the IT link may answer at once
                advance(item, S.FORWARDED)
        if direct and self._it.publish(item.topic, item.payload, item.props, item):
            return
        with self.lock:
            if item.state is not S.FORWARDED and direct:
                return  # the link went down meanwhile and it_down spooled it
            if self._held:
                self._hold(item)
            else:
                self._spool_locked(item)

    def _hold(self, item: Item) -> None:
        if item.state is not S.HELD:
            advance(item, S.HELD)
        self._held.append(item)

    def _spool_locked(self, item: Item) -> None:
        try:
            self._spool.append(SpoolRecord(*item.fields()))
        except SpoolFullError as exc:
            if not self._held:
                _log.error("spool full, holding messages unacknowledged on OT: %s", exc)
                with self.stats.lock:
                    self.stats.spool_full_events += 1
                    self.stats.spool_full = True
            self._hold(item)
            return
        self.spooled_count[item.device] += 1
        advance(item, S.SPOOLED)
        self._unsynced.append(item)
        with self.stats.lock:
            self.stats.spooled += 1

    def _retry_held(self) -> None:
        with self.lock:
            while self._held:
                item = self._held.popleft()
                if item.state is not S.HELD:  # acknowledged by IT after all (see NEXT)
                    continue
                before = len(self._held)
                self._spool_locked(item)
                if len(self._held) > before:  # still full: it went back to the end
                    self._held.rotate(1)
                    return
            with self.stats.lock:
                self.stats.spool_full = False

    def _record(
        self, refusals: list[Item], accepted: list[Item], dead: list[Item],
        extra: Sequence[AuditEvent],
    ) -> bool:  # fmt: skip
        events: list[AuditEvent] = list(extra)
        events += [
            dead_letter_event(i.letter[0], self.name, kept=i.letter[1])
            for i in dead
            if i.letter is not None
        ]
        events += [
            refusal_event(
                i.device or "unknown", i.topic, i.code, i.reason, i.msg_id, i.payload, self.name
            )
            for i in refusals
        ]
        lines = [
            (
                AcceptedLine(
                    i.device, i.msg_id, hashlib.sha256(i.payload).digest(), i.state is S.DUPLICATE
                ),
                i.topic,
            )
            for i in accepted
        ]
        return self._recorder.record(events, lines)

    def _complete(self, touched: list[Item]) -> None:
        """Acknowledge on OT, in one write, every touched item that is now safe."""
        remember: list[tuple[str, str]] = []
        forwarded: Counter[str] = Counter()
        now = self._clock()
        lat_sum = 0.0
        tokens = []
        for item in touched:
            state = item.state
            if not _SAFE_MASK >> state & 1:
                if state is not S.ACKED:
                    self._waiting[item.seq] = item
                continue
            self._waiting.pop(item.seq, None)
            advance(item, S.ACKED)
            tokens.append(item.token)
            if state is S.REFUSAL_RECORDED or state is S.DUPLICATE_RECORDED:
                continue
            remember.append((item.device, item.msg_id))
            if state is not S.BURIED:
                forwarded[item.device] += 1
                lat_sum += now - item.t0
        if tokens:
            self._ot.ack_many(tokens)  # one socket write for the whole batch
        if remember:
            self._dedup.remember(remember, self._wall())
            with self.lock:
                self._inproc.difference_update(remember)
        inflight = len(self._accepted) + len(self._refusals) + len(self._waiting) + len(self._held)
        self.stats.count_acked(forwarded, lat_sum, inflight)
