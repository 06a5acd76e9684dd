"""In-memory fakes of the relay's ports (`relay.ports`) and a small world that runs the real
`relay.pipeline.Pipeline` on them: a gateway stream on OT, an IT broker that answers or drops,
a spool that loses what was not fsynced on a restart, a drain, an audit log that can fail.

Each fake checks, at the moment it is called, what the product promises there (ADR 0050):
`MemoryIT.publish` that the message's audit record is durable; `MemoryOT.ack_many` that each
acknowledged message is audited and safe, and was not acknowledged before. A breach raises
`InvariantError` inside the pipeline's own call, so the failing interleaving is the one reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import AuditUnavailableError
from audit.events import AuditEvent, AuditReceipt
from pki.identity import DeviceIdentity
from policies import Decision, ReasonCode
from relay.config import AcceptedAudit, BrokerEndpoint, TLSFiles, WorkerConfig
from relay.deadletter import DeadLetter
from relay.errors import SpoolFullError
from relay.inspector import Verdict
from relay.pipeline import Item, Pipeline
from relay.ports import Fields
from relay.spool import SpoolRecord
from relay.stats import WorkerStats
from relay.worker import Worker

Key = tuple[str, str]  # (device, message id)
DEVICES = tuple(f"acme/plant1/stamping/line1/cell1/press-{n:02d}" for n in (1, 2, 3))


class InvariantError(AssertionError):
    """An invariant of the relay was broken."""


@dataclass
class Publish:
    """One message a gateway sent: ``n`` is its place in the OT stream (arrival order)."""

    n: int
    device: str
    msg_id: str
    accepted: bool


class MemoryAudit:
    """A `relay.ports.AuditPort`: durable on return, or `AuditUnavailableError` while
    ``failing``; ``broken`` like a log whose flush failed (it stays False unless a test sets it)."""

    def __init__(self) -> None:
        self.failing = False
        self.broken = False
        self.events: list[AuditEvent] = []
        self.audited: set[Key] = set()  # (actor, msg id) of every durable record

    def record(self, event: AuditEvent) -> AuditReceipt:
        return self.record_batch([event])[0]

    def record_batch(self, events: Sequence[AuditEvent]) -> list[AuditReceipt]:
        if self.failing:
            raise AuditUnavailableError("the fake audit log is failing")
        receipts = []
        for event in events:
            self.events.append(event)
            self.audited.add((event.actor, str(event.details.get("msg_id"))))
            receipts.append(AuditReceipt(len(self.events) - 1, b""))
        return receipts


class MemorySpool:
    """A `relay.ports.SpoolAppender`; ``records`` survive a restart only once synced."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self.records: list[SpoolRecord] = []
        self.synced = 0  # records[:synced] are durable

    @property
    def dirty(self) -> bool:
        return self.synced < len(self.records)

    def append(self, rec: SpoolRecord, /) -> None:
        if len(self.records) >= self.capacity:
            raise SpoolFullError("the fake spool is full")
        self.records.append(rec)

    def sync(self) -> None:
        self.synced = len(self.records)

    def durable(self) -> set[Key]:
        return {(r.device, r.msg_id) for r in self.records[: self.synced]}

    def pop_head(self) -> SpoolRecord:
        self.synced = max(0, self.synced - 1)
        return self.records.pop(0)

    def crash(self) -> None:
        del self.records[self.synced :]


class MemoryDedup:
    """A `relay.ports.Dedup`: what was remembered is durable."""

    def __init__(self) -> None:
        self.known: set[Key] = set()

    def seen_many(self, pairs: Sequence[Key], /) -> set[Key]:
        return {p for p in pairs if p in self.known}

    def remember(self, items: Iterable[Key], now: float, /) -> None:
        self.known.update(items)


class MemoryLetters:
    """A `relay.ports.DeadLetterStore`; a letter is kept once synced."""

    def __init__(self) -> None:
        self.buffered: list[DeadLetter] = []
        self.kept: list[DeadLetter] = []
        self.alarms = 0

    def append(self, letter: DeadLetter, now_wall: float, /) -> bool:
        self.buffered.append(letter)
        return True

    def sync(self) -> None:
        self.kept += self.buffered
        self.buffered.clear()

    def alarm_lost(self, count: int, /) -> None:
        self.alarms += count

    def kept_keys(self) -> set[Key]:
        return {(x.device, x.msg_id) for x in self.kept}


class MemoryRetainer:
    """A `relay.ports.Retainer`."""

    def __init__(self) -> None:
        self.records: list[Fields] = []

    def retain(self, records: Sequence[Fields], /) -> None:
        self.records.extend(records)


@dataclass
class Drained:
    """A spool record the drain sent to IT (the worker's own ref, not an `Item`)."""

    rec: SpoolRecord


class MemoryIT:
    """A `relay.ports.ITPublisher` and the IT broker behind it. ``inflight`` are publishes on
    the wire; the broker receives a prefix of them (TCP keeps order), logs what it accepted in
    ``log`` (what subscribers get) and answers each."""

    def __init__(self, audit: MemoryAudit) -> None:
        self.up = True
        self._audit = audit
        self.inflight: list[Item | Drained] = []
        self.log: list[Key] = []
        self.acked: set[Key] = set()
        self.refused: set[Key] = set()  # answered 0x87 at least once: dead letters, out of order

    def publish(
        self, topic: str, payload: bytes, properties: tuple[tuple[str, str], ...], ref: object, /
    ) -> bool:
        if not self.up:
            return False
        if isinstance(ref, Item):
            if (ref.device, ref.msg_id) not in self._audit.audited:
                raise InvariantError(f"{ref.msg_id} sent to IT before its audit record was durable")
            self.inflight.append(ref)
        elif isinstance(ref, Drained):
            self.inflight.append(ref)
        return True

    def flush(self) -> None:
        pass

    def start(self) -> None:  # the rest of `relay.ports.ITLink`, for a whole `Worker`
        pass

    def stop(self) -> None:
        pass

    def unacked_for_s(self, now: float, /) -> float:
        return 0.0

    def outstanding(self) -> int:
        return len(self.inflight)

    def receive(self, count: int, refuse: Sequence[bool]) -> list[tuple[object, int]]:
        """The broker takes the first ``count`` publishes and answers them (0x87: refused)."""
        answers: list[tuple[object, int]] = []
        for i in range(min(count, len(self.inflight))):
            ref = self.inflight.pop(0)
            key = _key(ref)
            refused = isinstance(ref, Item) and i < len(refuse) and refuse[i]
            if refused:
                self.refused.add(key)
            else:
                self.log.append(key)
                self.acked.add(key)
            answers.append((ref, 0x87 if refused else 0))
        return answers

    def go_down(self, received: int) -> list[Item | Drained]:
        """The connection drops: the broker got the first ``received`` (their acks are lost)."""
        self.up = False
        lost, self.inflight = self.inflight, []
        self.log += [_key(r) for r in lost[:received]]
        return lost


class MemoryOTLink:
    """A `relay.ports.OTLink` for a whole `Worker`: records the acknowledged tokens."""

    def __init__(self) -> None:
        self.acked: list[Any] = []

    def ack_many(self, tokens: Iterable[Any], /) -> int:
        before = len(self.acked)
        self.acked.extend(tokens)
        return len(self.acked) - before

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def worker_config(
    home: Path, *, policy_text: str = "", policy_source: str = "policy.toml",
    crl_path: Path | None = None, **more: Any,
) -> WorkerConfig:  # fmt: skip
    """A worker's configuration under ``home`` (its TLS files are never opened here)."""
    tls = TLSFiles(home / "ca.pem", home / "cert.pem", home / "key.pem")
    return WorkerConfig(
        ot=BrokerEndpoint("127.0.0.1", 8883, tls),
        it=BrokerEndpoint("127.0.0.1", 8884, tls),
        policy_text=policy_text,
        policy_source=policy_source,
        state_dir=home / "relay",
        audit_dir=home / "audit",
        audit_origin="plant1.example/idmz-audit",
        crl_path=crl_path,
        issuing_ca_path=None,
        ledger_path=None,
        **more,
    )


def memory_worker(
    home: Path, policy_text: str, policy_source: str, audit: MemoryAudit | None = None
) -> tuple[Worker, MemoryAudit, MemoryOTLink, MemoryIT]:
    """A whole worker 0 on in-memory links and audit (its spool, dedup window, retention and
    Sparkplug births are real files under ``home``), auditing accepted messages one by one."""
    config = worker_config(
        home, policy_text=policy_text, policy_source=policy_source, shared_subscription=False,
        accepted_audit=AcceptedAudit.PER_MESSAGE,  # the fake audit reads message ids
    )  # fmt: skip
    audit = audit or MemoryAudit()
    ot, it = MemoryOTLink(), MemoryIT(audit)
    return Worker(config, 0, audit=audit, links=lambda _: (ot, it)), audit, ot, it


def _key(ref: Item | Drained) -> Key:
    if isinstance(ref, Item):
        return (ref.device, ref.msg_id)
    return (ref.rec.device, ref.rec.msg_id)


@dataclass
class Delivery:
    token: tuple[int, int]  # (session, n): a restart starts a new session
    publish: Publish


@dataclass
class World:
    """The OT stream, the fakes and one pipeline; ``restart`` replaces the pipeline as a
    worker restart does (the OT broker redelivers what was not acknowledged, in order)."""

    accepted_audit: AcceptedAudit = AcceptedAudit.PER_MESSAGE
    audit: MemoryAudit = field(default_factory=MemoryAudit)
    spool: MemorySpool = field(default_factory=MemorySpool)
    dedup: MemoryDedup = field(default_factory=MemoryDedup)
    letters: MemoryLetters = field(default_factory=MemoryLetters)
    retainer: MemoryRetainer = field(default_factory=MemoryRetainer)
    published: list[Publish] = field(default_factory=list)
    pending: list[Delivery] = field(default_factory=list)  # sent by OT, not yet received
    unacked: dict[tuple[int, int], Delivery] = field(default_factory=dict)
    acked: set[tuple[int, int]] = field(default_factory=set)
    acked_keys: set[Key] = field(default_factory=set)
    acks: list[tuple[object, int]] = field(default_factory=list)  # IT answers, not yet handled
    session: int = 0
    drain_sent: int = 0  # spool records sent by the drain on this IT connection

    def __post_init__(self) -> None:
        self.it = MemoryIT(self.audit)
        self.pipeline = self._pipeline()

    def _pipeline(self) -> Pipeline:
        return Pipeline(
            "worker-0", ot=self, it=self.it, spool=self.spool, dedup=self.dedup,
            audit=self.audit, letters=self.letters, retainer=self.retainer,
            stats=WorkerStats(), policy_hash="0" * 64, accepted_audit=self.accepted_audit,
            audit_batch_max=8, refuse_on_audit_failure=True,
            spooled=Counter(r.device for r in self.spool.records),
            clock=lambda: 0.0, wall_clock=lambda: 0.0,
        )  # fmt: skip

    # -- the OT side (the pipeline's `relay.ports.OTAcks`) -----------------------------------

    def ack_many(self, tokens: Iterable[Any], /) -> int:
        count = 0
        for token in tokens:
            if token in self.acked:
                raise InvariantError(f"{token} acknowledged twice")
            delivery = self.unacked.pop(token, None)
            if delivery is None:
                raise InvariantError(f"{token} acknowledged but not delivered in this session")
            self._check_safe(delivery)
            self.acked.add(token)
            if delivery.publish.accepted:
                self.acked_keys.add((delivery.publish.device, delivery.publish.msg_id))
            count += 1
        return count

    def _check_safe(self, delivery: Delivery) -> None:
        p = delivery.publish
        key = (p.device, p.msg_id)
        if key not in self.audit.audited:
            raise InvariantError(f"{p} acknowledged on OT before its audit record was durable")
        if not p.accepted:
            return
        if key in self.it.acked or key in self.spool.durable() or key in self.letters.kept_keys():
            return
        if key in self.dedup.known:  # a duplicate of a message already safe
            return
        others = [d for d in self.unacked.values() if d.publish.msg_id == p.msg_id]
        if any(d.publish.device == p.device and d.publish.accepted for d in others):
            return  # a duplicate of a copy still held unacknowledged (OT keeps it)
        raise InvariantError(
            f"{p} acknowledged on OT but neither at IT, fsynced, nor a dead letter"
        )

    # -- steps -----------------------------------------------------------------------------

    def publish(self, device: str, msg_id: str, accepted: bool) -> None:
        p = Publish(len(self.published), device, msg_id, accepted)
        self.published.append(p)
        self.pending.append(Delivery((self.session, p.n), p))

    def deliver(self, count: int) -> None:
        for _ in range(min(count, len(self.pending))):
            d = self.pending.pop(0)
            self.unacked[d.token] = d
            p = d.publish
            device = DeviceIdentity.parse(p.device)
            decision = (
                Decision.allow()
                if p.accepted
                else Decision.deny(ReasonCode.PAYLOAD_NOT_JSON, "not JSON")
            )
            verdict = Verdict(decision, device, p.msg_id)
            self.pipeline.receive(
                d.token, f"{p.device}/telemetry", p.msg_id.encode(), verdict, 0.0, _props
            )

    def it_answer(self, count: int, refuse: Sequence[bool]) -> None:
        for ref, code in self.it.receive(count, refuse):
            if isinstance(ref, Drained):
                self._drained(ref)
            else:
                self.acks.append((ref, code))

    def _drained(self, ref: Drained) -> None:
        """The IT broker acknowledged the spool's head: the cursor moves past it."""
        head = self.spool.pop_head()
        if (head.device, head.msg_id) != (ref.rec.device, ref.rec.msg_id):
            raise InvariantError(
                f"the drain's acknowledgement {ref} is not the spool's head {head}"
            )
        self.drain_sent -= 1
        count = self.pipeline.spooled_count
        count[head.device] -= 1
        if count[head.device] <= 0:
            del count[head.device]

    def it_down(self, received: int) -> None:
        lost = self.it.go_down(received)
        self.pipeline.it_down([r for r in lost if isinstance(r, Item)])
        self.drain_sent = 0

    def drain(self, count: int) -> None:
        """The worker's drain: the spool's records in order, on a live IT connection."""
        with self.pipeline.lock:
            for rec in self.spool.records[self.drain_sent : self.drain_sent + count]:
                if not self.it.publish(rec.topic, rec.payload, rec.properties, Drained(rec)):
                    return
                self.drain_sent += 1

    def cycle(self) -> bool:
        acks, self.acks = self.acks, []
        items = [(ref, code) for ref, code in acks if isinstance(ref, Item)]
        return self.pipeline.cycle(items)

    def restart(self, received: int) -> None:
        """The worker dies: unsynced spool records are lost, the IT connection drops, the OT
        broker redelivers what was not acknowledged, in order, on a new session."""
        self.it.go_down(received)
        self.it.up = True
        self.acks.clear()
        self.drain_sent = 0
        self.spool.crash()
        self.letters.buffered.clear()
        self.session += 1
        again = [d.publish for d in sorted(self.unacked.values(), key=lambda d: d.token[1])]
        again += [d.publish for d in self.pending]
        self.unacked.clear()
        self.pending = [Delivery((self.session, p.n), p) for p in again]
        self.pipeline = self._pipeline()


def _props(device: str, msg_id: str) -> tuple[tuple[str, str], ...]:
    return (("idmz-device", device), ("idmz-msg-id", msg_id))
