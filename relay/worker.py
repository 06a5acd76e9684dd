"""One relay worker: OT subscription in, checks, audit, IT out, ack after durable.

The data path for one message (numbers match docs/relay.md):

1. `OTSource` delivers it (its reader thread); nothing is acknowledged yet.
2. `Inspector` names the sender from the broker-verified topic prefix and checks revocation,
   policy, rate, size and schema. A refusal is queued for its own audit record.
3. Duplicates (same device + message id already safe, here or in another worker) are not
   forwarded; they are counted, audited in the batch, then acknowledged.
4. The committer thread, every ``audit_batch_interval_ms`` or ``audit_batch_max`` messages,
   writes the audit records (group commit) first. Only then are the accepted messages routed,
   in arrival order: published to IT (QoS 1, same topic, provenance user properties) when the
   IT broker is up and the device has nothing spooled, otherwise appended to the spool, so
   that every device's messages leave in the order they arrived. Nothing reaches IT before
   its audit record is durable; with ``on_audit_failure = "refuse"`` nothing is forwarded
   while the log cannot record (``forward-and-alarm`` forwards and raises the alarm).
5. A later cycle fsyncs the spool and acknowledges on OT every message that is both audited
   and safe (IT PUBACK received, or fsynced in the spool), and remembers its id in the shared
   dedup window.
6. The drainer thread sends spooled messages to IT in order at ``drain_rate_per_s`` and
   advances the spool cursor over the prefix the IT broker acknowledged.

Nothing is ever dropped: when the spool is full, new messages are held unacknowledged, the OT
broker stops delivering once ``max_inflight`` are outstanding, and it (and the gateways' own
outboxes) keep the data. The alarm is the ``spool_full`` metric and an error log line.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from audit.events import AuditEvent, AuditSink
from policies import AuditFailureMode, ReasonCode, load_policy
from policies.broker_config import (
    PACKET_OVERHEAD_BYTES,
    max_packet_bytes,
    relay_client_id,
    relay_subscription,
)
from relay.config import WorkerConfig
from relay.deadletter import DeadLetter, DeadLetters, dead_letter_event, refused_by_it
from relay.dedup import DedupWindow
from relay.inspector import Inspector, inspection_failed
from relay.it_sink import ITSink
from relay.ot_source import Delivery, OTSource
from relay.pipeline import Item, Pipeline
from relay.ports import Fields, ITLink, OTLink
from relay.retention import Retention, read_epoch
from relay.revocation import CrlWatcher, RevocationState
from relay.share_secret import ensure_share_secret
from relay.spool import Spool, SpoolRecord, encode_fields
from relay.stats import WorkerStats, write_snapshot

_log = logging.getLogger("relay.worker")


class _DrainRef:
    """A spooled record on its way to IT: ``end`` is its end offset in the spool file of
    generation ``file_gen``; ``gen`` the drain generation (IT connection) it was sent in."""

    __slots__ = ("acked", "end", "file_gen", "gen", "rec")

    def __init__(self, end: int, rec: SpoolRecord, gen: int, file_gen: int) -> None:
        self.end, self.rec, self.gen, self.file_gen = end, rec, gen, file_gen
        self.acked = False

    @property
    def device(self) -> str:
        return self.rec.device


class _Dead:
    """A spooled record on its way to the dead-letter file (``kept`` once buffered there)."""

    __slots__ = ("kept", "letter", "ref")

    def __init__(self, ref: _DrainRef, letter: DeadLetter) -> None:
        self.ref, self.letter = ref, letter
        self.kept: bool | None = None


class _Retained:
    """The `relay.ports.Retainer` over the retention log (shared with the IT-up replay)."""

    def __init__(self, retention: Retention, lock: threading.Lock) -> None:
        self.retention, self.lock = retention, lock

    def retain(self, records: Sequence[Fields]) -> None:
        data = b"".join([encode_fields(*fields) for fields in records])
        with self.lock:
            self.retention.append(data)
            self.retention.sync(time.time())


def broker_links(worker: Worker) -> tuple[OTLink, ITLink]:
    """The real ports to the brokers (the composition's default): the lean OT reader and IT
    writer, with the worker's client ids, subscription and limits, calling back into it."""
    config, policy, limits = worker.config, worker.policy, worker.config.limits
    ot = OTSource(
        config.ot,
        client_id=worker.client_id("ot"),
        subscription=worker.subscription(),
        receive_maximum=limits.max_inflight,
        session_expiry_s=config.session_expiry_s,
        # Above what the OT broker accepts, so it never has to drop a message for us.
        max_packet_bytes=max_packet_bytes(policy) + PACKET_OVERHEAD_BYTES,
        on_delivery=worker.on_delivery,
        on_state=worker.on_ot_state,
    )
    it = ITSink(
        config.it,
        client_id=worker.client_id("it"),
        # Persistent, so that a CONNACK without the session says the broker lost its state.
        session_expiry_s=config.session_expiry_s,
        on_acked=worker.on_it_acked,
        on_down=worker.on_it_down,
        on_up=worker.on_it_up,
    )
    return ot, it


class Worker:
    """The threads and the I/O around one `relay.pipeline.Pipeline`: the OT reader's and IT
    writer's callbacks, the committer (the pipeline's commit cycle), the drainer and the stats.
    ``links`` builds the broker ports (`broker_links` unless given)."""

    def __init__(
        self,
        config: WorkerConfig,
        index: int,
        *,
        audit: AuditSink,
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
        self._dead: deque[_Dead] = deque()  # spooled records refused or revoked: to audit
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
        self._read_offset = self._spool.cursor
        self._drain_gen = 0
        self._drain_out: deque[_DrainRef] = deque()
        # Spool records (by end offset in the current file) that are dead letters: False while
        # being audited, True once kept. Mosquitto 2.0.11 closes the connection after refusing
        # a publish, so the drain re-reads the record before the refusal is even handled: it
        # must not send it again (that would be refused and disconnected again, forever).
        self._dead_at: dict[int, bool] = {}
        self._ot, self._it = links(self)
        self._pipe = Pipeline(
            self.name,
            ot=self._ot,
            it=self._it,
            spool=self._spool,
            dedup=self._dedup,
            audit=audit,
            letters=self._letters,
            retainer=_Retained(self._retention, self._retention_lock),
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
        self._threads = [
            threading.Thread(target=self._commit_loop, name="committer", daemon=True),
            threading.Thread(target=self._drain_loop, name="drainer", daemon=True),
            threading.Thread(target=self._stats_loop, name="stats", daemon=True),
        ]

    def client_id(self, side: str) -> str:
        """``<relay identity>:<secret-derived tag>-<index>-<side>`` (ADR 0058): the brokers'
        plugin admits it only with the relay's certificate, and no device can guess it."""
        config = self.config
        secret_file = config.share_secret_file or config.state_dir / "share-secret"
        return relay_client_id(self.policy, ensure_share_secret(secret_file), self.index, side)

    def subscription(self) -> str:
        """One worker: a plain persistent subscription (Mosquitto 2.0.11 restores it from
        persistence after a broker restart and keeps strict order). Several: an MQTT 5 shared
        subscription (ADR 0052) whose group is derived from the relay's secret (ADR 0034), so a
        gateway that knows the policy's public group name cannot join it."""
        config = self.config
        if not config.shared_subscription:
            return f"{self.policy.enterprise}/#"
        secret_file = config.share_secret_file or config.state_dir / "share-secret"
        return relay_subscription(self.policy, ensure_share_secret(secret_file))

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
        if self._pipe.receive(d.ack_token, d.topic, d.payload, verdict, now, self._provenance):
            self._wake.set()

    def _provenance(self, device: str, msg_id: str) -> tuple[tuple[str, str], ...]:
        return (
            ("idmz-device", device),
            ("idmz-cert-sha256", self._inspector.revocation.fingerprints.get(device, "unknown")),
            ("idmz-policy-sha256", self.policy.content_hash),
            ("idmz-msg-id", msg_id),
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
            self._drain_gen += 1
            self._drain_out.clear()
            self._read_offset = self._spool.cursor
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
                self._read_offset = 0
                self._drain_gen += 1
                self._drain_out.clear()
                self._dead_at.clear()
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
            elif isinstance(ref, _DrainRef):
                if code >= 0x80:
                    self._drain_refused(ref, code)
                elif ref.gen == self._drain_gen and not ref.acked:
                    ref.acked = True
                    rec = ref.rec
                    retained.append(
                        (rec.topic, rec.device, rec.msg_id, rec.properties, rec.payload)
                    )
        dead = [self._dead.popleft() for _ in range(len(self._dead))]

        def after_audit() -> None:
            if popped:
                with self._acks_cv:
                    self._acks_done += popped
                    self._acks_cv.notify_all()
            self._advance_drain()

        audited = self._pipe.cycle(
            item_acks,
            extra_events=self._dead_letter_events(dead),
            extra_retained=retained,
            after_audit=after_audit,
        )
        if not audited:
            self._dead.extendleft(reversed(dead))
        elif dead:
            self._bury(dead)
        return audited

    def _drain_refused(self, ref: _DrainRef, code: int) -> None:
        with self._lock:  # the first refusal of a record of the current file counts
            first = ref.file_gen == self._spool.generation and ref.end not in self._dead_at
            if first:
                self._dead_at[ref.end] = False
        if first:
            rec = ref.rec
            letter = refused_by_it(rec.device, rec.msg_id, rec.topic, rec.payload, code)
            self._dead.append(_Dead(ref, letter))

    # -- dead letters ---------------------------------------------------------------------

    def _dead_letter_events(self, dead: list[_Dead]) -> list[AuditEvent]:
        """Buffer each dead letter (once, also when the audit is retried) and its record."""
        events = []
        for entry in dead:
            if entry.kept is None:
                entry.kept = self._letters.append(entry.letter, time.time())
            events.append(dead_letter_event(entry.letter, self.name, kept=entry.kept))
        return events

    def _bury(self, buried: list[_Dead]) -> None:
        """Audited: make the dead letters durable, then let the spool cursor move past them."""
        self._letters.sync()
        lost = sum(1 for e in buried if not e.kept)
        if lost:
            self._letters.alarm_lost(lost)
        ends = set()
        for entry in buried:
            entry.ref.acked = True
            ends.add((entry.ref.file_gen, entry.ref.end))
        with self._lock:  # the same record may be in flight again since (see _dead_at)
            for file_gen, end in ends:
                if file_gen == self._spool.generation:
                    self._dead_at[end] = True
            for ref in self._drain_out:
                if (ref.file_gen, ref.end) in ends:
                    ref.acked = True
        self.stats.count_dead_letters(len(buried), lost)
        self._advance_drain()

    # -- drainer --------------------------------------------------------------------------

    def _advance_drain(self) -> None:
        with self._lock:
            end = None
            while self._drain_out and self._drain_out[0].acked:
                ref = self._drain_out.popleft()
                end = ref.end
                spooled = self._pipe.spooled_count
                left = spooled[ref.device] - 1
                if left > 0:
                    spooled[ref.device] = left
                else:
                    spooled.pop(ref.device, None)
                if self._dead_at.pop(ref.end, None) is None:  # not a dead letter
                    with self.stats.lock:
                        self.stats.drained += 1
            if end is not None:
                self._spool.commit(end)
                if self._spool.cursor == 0:
                    self._read_offset = 0
                    self._dead_at.clear()  # a new file: offsets start again
            with self.stats.lock:
                self.stats.spool_bytes = self._spool.pending_bytes

    def _drain_loop(self) -> None:
        rate = self._limits.drain_rate_per_s
        window = 256
        tokens, last = 0.0, time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            tokens = min(max(rate / 10, 1.0), tokens + (now - last) * rate)
            last = now
            with self._lock:
                ready = self._it.up and self._read_offset < self._spool.end
                room = window - len(self._drain_out)
                gen, file_gen = self._drain_gen, self._spool.generation
                batch = (
                    self._spool.read(self._read_offset, min(room, int(tokens)))
                    if ready and room > 0 and tokens >= 1
                    else []
                )
            if not batch:
                self._stop.wait(0.02)
                continue
            revoked = self._inspector.revocation.revoked_devices
            for end, rec in batch:
                ref = _DrainRef(end, rec, gen, file_gen)
                with self._lock:
                    dead = self._dead_at.get(end)
                if dead is not None or rec.device in revoked:  # never sent (again)
                    with self._lock:
                        if gen != self._drain_gen:
                            break
                        self._read_offset = end
                        self._drain_out.append(ref)
                        if dead is None:  # revoked while it waited: refused here
                            self._dead_at[end] = False
                        ref.acked = bool(dead)  # a dead letter already kept
                    if dead is None:
                        self._dead.append(_Dead(ref, _revoked_letter(rec)))
                        self._wake.set()
                    continue
                if not self._it.publish(rec.topic, rec.payload, rec.properties, ref):
                    break
                tokens -= 1
                with self._lock:
                    if gen != self._drain_gen:
                        break
                    self._read_offset = end
                    self._drain_out.append(ref)
            self._it.flush()

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


def _revoked_letter(rec: SpoolRecord) -> DeadLetter:
    return DeadLetter(
        rec.device, rec.msg_id, rec.topic, ReasonCode.CERTIFICATE_REVOKED.value,
        "every certificate of the device was revoked while the message waited in the spool",
        rec.payload,
    )  # fmt: skip


def _utcnow() -> datetime:
    return datetime.now(UTC)
