"""One relay worker: the threads and the I/O around the relay's core (ADR 0082).

The data path for one message (numbers match docs/relay.md), and where each step lives:

1. `OTSource` delivers it on its reader thread (`Worker.on_delivery`); nothing is acked yet.
2. `Inspector` names the sender and checks revocation, policy, rate, size and schema; its
   `Verdict` carries the policy `Decision`. `Pipeline.receive` queues the message.
3.-5. The committer thread runs `Pipeline.cycle` every ``audit_batch_interval_ms`` or
   ``audit_batch_max`` messages: duplicates, the audit group commit, then routing in arrival
   order (direct to IT, or spool), the fsyncs, and one OT acknowledgement for everything
   audited and safe (`relay.pipeline` has each message's states and the rules).
6. The drainer thread (`relay.drain`) sends spooled messages to IT in order.

Nothing is ever dropped: when the spool is full, new messages are held unacknowledged, the OT
broker stops delivering once ``max_inflight`` are outstanding, and it (and the gateways' own
outboxes) keep the data. The alarm is the ``spool_full`` metric and an error log line.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from policies import (
    CERT_SHA256_PROPERTY,
    DEVICE_PROPERTY,
    MSG_ID_PROPERTY,
    POLICY_SHA256_PROPERTY,
    AuditFailureMode,
    load_policy,
)
from relay.config import WorkerConfig
from relay.deadletter import DeadLetters
from relay.dedup import DedupWindow
from relay.drain import Drain
from relay.inspector import Inspector, inspection_failed
from relay.links import broker_links
from relay.ot_source import Delivery
from relay.pipeline import Item, Pipeline
from relay.ports import AuditPort, Fields, ITLink, OTLink
from relay.retention import Retainer, Retention, read_epoch
from relay.revocation import CrlWatcher, RevocationState
from relay.sparkplug_flow import SparkplugFlow
from relay.spool import Spool
from relay.stats import WorkerStats, write_snapshot

_log = logging.getLogger("relay.worker")


class Worker:
    """The threads and the I/O around one `relay.pipeline.Pipeline`: the OT reader's and IT
    writer's callbacks, the committer (the pipeline's commit cycle), the drainer and the stats.
    ``links`` builds the broker ports (`broker_links` unless given)."""

    def __init__(
        self,
        config: WorkerConfig,
        index: int,
        *,
        audit: AuditPort,
        clock: Callable[[], float] = time.monotonic,
        on_fatal: Callable[[str], None] | None = None,
        links: Callable[[Worker], tuple[OTLink, ITLink]] = broker_links,
    ) -> None:
        self.config = config
        self.index = index
        self.name = f"worker-{index}"
        self.policy = load_policy(config.policy_text, source=config.policy_source)
        self.stats = WorkerStats()
        self.stats.policy_sha256 = self.policy.content_hash
        self._clock = clock
        limits = config.limits
        self._limits = limits
        state = config.state_dir / self.name
        self._spool = Spool(state / "spool", max_bytes=limits.spool_max_bytes)
        dedup_path = config.state_dir / "dedup.sqlite"
        self._dedup = DedupWindow(  # used by the committer thread only
            dedup_path, window_s=limits.dedup_window_s, max_ids=limits.dedup_max_ids
        )
        self._inspector = Inspector(self.policy, RevocationState())
        tracker, sp = self._inspector.sparkplug, self.policy.sparkplug
        self._sparkplug = (
            SparkplugFlow(self.name, self.stats, tracker, state / "sparkplug", sp)
            if tracker is not None and sp is not None
            else None
        )
        self._crl: CrlWatcher | None = None
        if config.crl_path is not None:
            self._crl = CrlWatcher(
                config.crl_path,
                config.issuing_ca_path,
                config.ledger_path,
                clock=_utcnow,
                on_change=self._on_revocation,
                poll_interval_s=limits.crl_poll_interval_s,
            )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._it_acks: deque[tuple[object, int]] = deque()
        self._letters = DeadLetters(
            state / "dead-letters.jsonl",
            max_bytes=limits.dead_letter_max_bytes,
            worker=self.name,
        )
        self._retention_lock = threading.Lock()  # taken after self._lock, never before it
        self._acks_cv = threading.Condition()
        self._acks_in = self._acks_done = 0  # IT acks queued / handled by the committer
        self._retention = Retention(
            state / "retention",
            max_bytes=limits.it_retention_max_bytes,
            window_s=limits.it_retention_s,
            now=time.time(),
        )
        self._ot, self._it = links(self)
        self._pipe = Pipeline(
            self.name,
            ot=self._ot,
            it=self._it,
            spool=self._spool,
            dedup=self._dedup,
            audit=audit,
            letters=self._letters,
            retainer=Retainer(self._retention, self._retention_lock),
            stats=self.stats,
            policy_hash=self.policy.content_hash,
            accepted_audit=config.accepted_audit,
            audit_batch_max=limits.audit_batch_max,
            refuse_on_audit_failure=self.policy.relay.on_audit_failure is AuditFailureMode.REFUSE,
            spooled=Counter(r.device for r in self._spool.records()),
            clock=clock,
            wall_clock=time.time,
            on_broken_audit=on_fatal,
        )
        self._lock = self._pipe.lock  # the routing state, shared with the drain
        self._drain = Drain(
            self.name,
            spool=self._spool,
            it=self._it,
            pipeline=self._pipe,
            letters=self._letters,
            stats=self.stats,
            rate_per_s=limits.drain_rate_per_s,
            revoked=lambda: self._inspector.revocation.revoked_devices,
            wake=self._wake.set,
        )
        self._threads = [
            threading.Thread(target=self._commit_loop, name="committer", daemon=True),
            threading.Thread(
                target=self._drain.loop, args=(self._stop,), name="drainer", daemon=True
            ),
            threading.Thread(target=self._stats_loop, name="stats", daemon=True),
        ]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._crl is not None:
            self._crl.start()
        for t in self._threads:
            t.start()
        self._it.start()
        self._ot.start()
        _log.info("%s started (policy %s)", self.name, self.policy.content_hash[:12])

    def stop(self) -> None:
        self._ot.stop()
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            if t.ident is not None:  # started (stop() also follows a failed start)
                t.join(timeout=10)
        self._it.stop()
        if self._crl is not None:
            self._crl.stop()
        self._spool.close()
        with self._retention_lock:
            self._retention.close()
        self._letters.close()
        self._dedup.close()

    # -- OT thread ----------------------------------------------------------------------

    def on_delivery(self, d: Delivery) -> None:
        """Judge one delivery. Total: an exception here would reach the OT link, which drops
        the connection, and the broker would redeliver the same message first, forever (review
        H2). Any failure of the checks is an audited ``inspection_error`` refusal, acknowledged
        once its record is durable like every refusal, and the worker goes on."""
        now = self._clock()
        try:
            if self._crl is not None:
                self._crl.refresh()
            verdict = self._inspector.inspect(d.topic, d.payload, d.property_msg_id, now)
        except Exception as exc:  # noqa: BLE001 - refused and audited below, never a reconnect
            verdict = inspection_failed(d.topic, d.payload, d.property_msg_id, exc)
        if verdict.error is not None:
            # The traceback's frames, not the exception's text: that may quote payload bytes.
            _log.error(
                "%s: inspecting message %s from %s on %a raised %s; refused as %s\n%s",
                self.name, verdict.msg_id, verdict.device or "an unknown sender", d.topic[:120],
                type(verdict.error).__name__, verdict.reason_code,
                "".join(traceback.format_tb(verdict.error.__traceback__)).rstrip(),
            )  # fmt: skip
        spb = self._sparkplug if verdict.sparkplug is not None else None  # ADR 0110
        if spb is not None:  # its birth on disk before the committer can acknowledge it
            spb.keep(d.topic, d.payload, verdict)
        if self._pipe.receive(d.ack_token, d.topic, d.payload, verdict, now, self._provenance):
            self._wake.set()
        if spb is not None:
            spb.accepted(d.topic, d.payload, verdict, now, self._pipe, self._provenance)
            self._wake.set()

    def _provenance(self, device: str, msg_id: str) -> tuple[tuple[str, str], ...]:
        return (
            (DEVICE_PROPERTY, device),
            (CERT_SHA256_PROPERTY, self._inspector.revocation.fingerprints.get(device, "unknown")),
            (POLICY_SHA256_PROPERTY, self.policy.content_hash),
            (MSG_ID_PROPERTY, msg_id),
        )

    def on_ot_state(self, up: bool) -> None:
        with self.stats.lock:
            self.stats.ot_connected = up
        if not up:
            self._pipe.ot_down()

    # -- IT callbacks ---------------------------------------------------------------------

    def on_it_acked(self, ref: object, reason_code: int) -> None:
        self._it_acks.append((ref, reason_code))  # the IT link thread: only queue
        self._acks_in += 1  # written by the IT link thread only
        if not self._wake.is_set():  # Event.set takes a lock and notifies: once per cycle
            self._wake.set()

    def on_it_down(self, refs: Sequence[object]) -> None:
        self._pipe.it_down(refs)
        with self._lock:
            self._drain.restart_locked(replayed=False)
        with self.stats.lock:
            self.stats.it_connected = False
        self._wake.set()

    def on_it_up(self, session_present: bool) -> None:
        """Before anything is published on the new connection: if the IT broker may have lost
        what it acknowledged, put the retained messages back in front of the spool (ADR 0081),
        so they leave first and every device's order is kept."""
        epoch = read_epoch(self.config.state_dir)
        replayed = 0
        self._wait_acks_retained()
        with self._lock, self._retention_lock:
            self._retention.sync(time.time())  # durable, and nothing older than the window
            why = self._retention.lost_state(session_present=session_present, epoch=epoch)
            if why:
                replayed = self._spool.prepend(self._retention.records())
                self._pipe.spooled_count = Counter(r.device for r in self._spool.records())
                self._drain.restart_locked(replayed=True)
            self._retention.mark_handled(epoch)
        if why:
            _log.warning(
                "%s: %s: re-sending the %d message(s) it acknowledged in the last %g s before "
                "anything else (duplicates carry the same idmz-msg-id)",
                self.name, why, replayed, self._limits.it_retention_s,
            )  # fmt: skip
        with self.stats.lock:
            self.stats.it_connected = True
            self.stats.replayed += replayed
            self.stats.spool_bytes = self._spool.pending_bytes

    def _wait_acks_retained(self) -> None:
        """Every PUBACK of the lost connection is in the retention log (the committer
        handles them), so the replay has all of them."""
        target = self._acks_in
        self._wake.set()
        deadline = time.monotonic() + 30.0
        with self._acks_cv:
            while self._acks_done < target and not self._stop.is_set():
                if time.monotonic() > deadline:
                    _log.error("%s: the committer has not handled IT acks for 30 s", self.name)
                    return
                self._acks_cv.wait(0.1)

    def _on_revocation(self, old: RevocationState, new: RevocationState) -> None:
        self._inspector.revocation = new
        added = new.revoked_devices - old.revoked_devices
        with self.stats.lock:
            self.stats.revoked_devices = len(new.revoked_devices)
        if added:
            _log.warning("%s: now refusing %d revoked device(s)", self.name, len(added))

    # -- committer ------------------------------------------------------------------------

    def _commit_loop(self) -> None:
        interval = self._limits.audit_batch_interval_ms / 1000.0
        last_prune = 0.0
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            try:
                if not self._commit_cycle():
                    time.sleep(0.2)  # the audit could not record: nothing moved; retry
            except Exception:  # noqa: BLE001 - the loop must survive; logged, retried
                _log.exception("%s: commit cycle failed; retrying", self.name)
                time.sleep(0.5)
            if time.monotonic() - last_prune > 60:
                last_prune = time.monotonic()
                self._dedup.prune(time.time())

    def _commit_cycle(self) -> bool:
        """The pipeline's cycle, with the drain's share: what IT acknowledged from the spool
        is retained in the same fsync, its refusals audited in the same group commit."""
        item_acks: list[tuple[Item, int]] = []
        retained: list[Fields] = []  # acknowledged by IT: kept for it_retention_s
        popped = 0
        while self._it_acks:
            ref, code = self._it_acks.popleft()
            popped += 1
            if isinstance(ref, Item):
                item_acks.append((ref, code))
            else:
                self._drain.answer(ref, code, retained)
        dead = self._drain.take_dead()
        spb = self._sparkplug.take_events() if self._sparkplug is not None else []

        def after_audit() -> None:  # before anything of this cycle is acknowledged on OT
            if self._sparkplug is not None:
                self._sparkplug.sync_births()
            if popped:
                with self._acks_cv:
                    self._acks_done += popped
                    self._acks_cv.notify_all()
            self._drain.advance()

        audited = self._pipe.cycle(
            item_acks,
            extra_events=[*self._drain.dead_events(dead), *spb],
            extra_retained=retained,
            after_audit=after_audit,
        )
        if not audited:
            self._drain.requeue_dead(dead)
            if self._sparkplug is not None:
                self._sparkplug.requeue(spb)
        elif dead:
            self._drain.bury(dead)
        return audited

    # -- stats ----------------------------------------------------------------------------

    def _stats_loop(self) -> None:
        path = self.config.state_dir / f"{self.name}.stats.json"
        deadline = self._limits.it_ack_deadline_s
        while not self._stop.wait(1.0):
            unacked_s = self._it.unacked_for_s(time.monotonic())
            with self.stats.lock:
                self.stats.it_unacked_s = round(unacked_s, 1)
                self.stats.it_outstanding = self._it.outstanding()
                stalled = unacked_s > deadline
                if stalled and not self.stats.it_stalled:
                    _log.error(
                        "%s: the IT broker has acknowledged nothing for %.0f s (%d outstanding; "
                        "it_ack_deadline_s=%g)",
                        self.name, unacked_s, self.stats.it_outstanding, deadline,
                    )  # fmt: skip
                self.stats.it_stalled = stalled
                self.stats.dead_letter_bytes = self._letters.size_bytes
                self.stats.dead_letter_full = self._letters.full
            try:
                write_snapshot(path, self.stats.snapshot())
            except OSError:
                _log.exception("cannot write %s", path)

    def snapshot(self) -> dict[str, Any]:
        return self.stats.snapshot()


def _utcnow() -> datetime:
    return datetime.now(UTC)


GC_YOUNG_THRESHOLD = 50_000  # CPython's default is 700


def quiet_gc() -> None:
    """For a worker process, once its modules and its `Worker` are loaded: move everything that
    exists now out of the cyclic collector's sight (``gc.freeze``) and let the young generation
    grow to ``GC_YOUNG_THRESHOLD`` objects before a collection. The hot path allocates tuples,
    bytes and small objects per message but makes no reference cycles; with the defaults the
    collector ran every ~700 allocations and walked the policy, the schemas and the modules on
    every older-generation pass (~10 % of a busy worker's CPU in perf, ADR 0125)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
