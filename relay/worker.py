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

import hashlib
import logging
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from audit.errors import AuditError
from audit.events import AuditEvent, AuditSink
from policies import AuditFailureMode, ReasonCode, load_policy
from policies.broker_config import (
    PACKET_OVERHEAD_BYTES,
    max_packet_bytes,
    relay_client_id,
    relay_subscription,
)
from relay.config import AcceptedAudit, WorkerConfig
from relay.deadletter import IT_REFUSED, DeadLetter, DeadLetters, dead_letter_event
from relay.dedup import DedupWindow
from relay.errors import SpoolFullError
from relay.inspector import Inspector, inspection_failed
from relay.it_sink import ITSink
from relay.mqtt_codec import reason_name
from relay.ot_source import Delivery, OTSource
from relay.records import AcceptedLine, batch_digest, batch_event, message_event, refusal_event
from relay.retention import Retention, read_epoch
from relay.revocation import CrlWatcher, RevocationState
from relay.share_secret import ensure_share_secret
from relay.spool import Spool, SpoolRecord, encode_fields
from relay.stats import WorkerStats, write_snapshot

_log = logging.getLogger("relay.worker")
_Fields = tuple[str, str, str, tuple[tuple[str, str], ...], bytes]  # a record, not yet encoded


class _Item:
    """One message between delivery and OT acknowledgement."""

    __slots__ = (
        "acked", "audit_done", "code", "dead", "device", "duplicate", "it_done", "msg_id",
        "payload", "props", "reason", "seq", "spooled", "t0", "token", "topic",
    )  # fmt: skip

    def __init__(self, seq: int, d: Delivery, device: str, msg_id: str, t0: float) -> None:
        self.seq, self.token, self.topic, self.payload = seq, d.ack_token, d.topic, d.payload
        self.device, self.msg_id, self.t0 = device, msg_id, t0
        self.props: tuple[tuple[str, str], ...] = ()
        self.code = self.reason = ""
        self.duplicate = self.spooled = self.it_done = self.audit_done = self.acked = False
        self.dead = False  # refused by the IT broker: audited and kept as a dead letter


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
    """A message on its way to the dead-letter file (``kept`` once buffered there)."""

    __slots__ = ("kept", "letter", "ref")

    def __init__(self, ref: _Item | _DrainRef, letter: DeadLetter) -> None:
        self.ref, self.letter = ref, letter
        self.kept: bool | None = None


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        index: int,
        *,
        audit: AuditSink,
        clock: Callable[[], float] = time.monotonic,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.name = f"worker-{index}"
        self.policy = load_policy(config.policy_text, source=config.policy_source)
        self.stats = WorkerStats()
        self.stats.policy_sha256 = self.policy.content_hash
        self._clock = clock
        self._audit = audit
        self._on_fatal = on_fatal
        limits = config.limits
        self._limits = limits
        self._refuse_on_audit_failure = (
            self.policy.relay.on_audit_failure is AuditFailureMode.REFUSE
        )
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
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seq = 0
        self._inproc: set[tuple[str, str]] = set()
        self._refusals: deque[_Item] = deque()
        self._accepted: deque[_Item] = deque()
        self._it_acks: deque[tuple[object, int]] = deque()
        self._dead: deque[_Dead] = deque()  # the committer audits and keeps them
        self._buried: list[_Dead] = []  # audited this cycle; kept at its end
        self._letters = DeadLetters(
            state / "dead-letters.jsonl",
            max_bytes=limits.dead_letter_max_bytes,
            worker=self.name,
        )
        self._unsynced: list[_Item] = []
        self._held: deque[_Item] = deque()
        self._waiting: dict[int, _Item] = {}  # audited, waiting for IT
        self._retention_lock = threading.Lock()  # taken after self._lock, never before it
        self._acks_cv = threading.Condition()
        self._acks_in = self._acks_done = 0  # IT acks queued / handled by the committer
        self._retention = Retention(
            state / "retention",
            max_bytes=limits.it_retention_max_bytes,
            window_s=limits.it_retention_s,
            now=time.time(),
        )
        self._spooled_count: Counter[str] = Counter(r.device for r in self._spool.records())
        self._read_offset = self._spool.cursor
        self._drain_gen = 0
        self._drain_out: deque[_DrainRef] = deque()
        # Spool records (by end offset in the current file) that are dead letters: False while
        # being audited, True once kept. Mosquitto 2.0.11 closes the connection after refusing
        # a publish, so the drain re-reads the record before the refusal is even handled: it
        # must not send it again (that would be refused and disconnected again, forever).
        self._dead_at: dict[int, bool] = {}
        self._prev_digest = ""
        self._ot = OTSource(
            config.ot,
            client_id=self._client_id(config, index, "ot"),
            subscription=self._subscription(config),
            receive_maximum=limits.max_inflight,
            session_expiry_s=config.session_expiry_s,
            # Above what the OT broker accepts, so it never has to drop a message for us.
            max_packet_bytes=max_packet_bytes(self.policy) + PACKET_OVERHEAD_BYTES,
            on_delivery=self._on_delivery,
            on_state=self._on_ot_state,
        )
        self._it = ITSink(
            config.it,
            client_id=self._client_id(config, index, "it"),
            # Persistent, so that a CONNACK without the session says the broker lost its state.
            session_expiry_s=config.session_expiry_s,
            on_acked=self._on_it_acked,
            on_down=self._on_it_down,
            on_up=self._on_it_up,
        )
        self._threads = [
            threading.Thread(target=self._commit_loop, name="committer", daemon=True),
            threading.Thread(target=self._drain_loop, name="drainer", daemon=True),
            threading.Thread(target=self._stats_loop, name="stats", daemon=True),
        ]

    def _client_id(self, config: WorkerConfig, index: int, side: str) -> str:
        """``<relay identity>:<secret-derived tag>-<index>-<side>`` (ADR 0058): the brokers'
        plugin admits it only with the relay's certificate, and no device can guess it."""
        secret_file = config.share_secret_file or config.state_dir / "share-secret"
        return relay_client_id(self.policy, ensure_share_secret(secret_file), index, side)

    def _subscription(self, config: WorkerConfig) -> str:
        """One worker: a plain persistent subscription (Mosquitto 2.0.11 restores it from
        persistence after a broker restart and keeps strict order). Several: an MQTT 5 shared
        subscription (ADR 0052) whose group is derived from the relay's secret (ADR 0034), so a
        gateway that knows the policy's public group name cannot join it."""
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

    def _on_delivery(self, d: Delivery) -> None:
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
        device = verdict.device.path if verdict.device is not None else ""
        with self._lock:
            self._seq += 1
            item = _Item(self._seq, d, device, verdict.msg_id, now)
        if not verdict.accepted:
            item.code, item.reason, item.it_done = verdict.reason_code, verdict.reason, True
            with self.stats.lock:
                self.stats.refused[item.code] += 1
                if device:
                    key = self.stats.device_key(self.stats.device_refused, device)
                    self.stats.device_refused[key] += 1
            self._refusals.append(item)
            self._wake.set()
            return
        key2 = (device, item.msg_id)
        if key2 in self._inproc:  # the shared window is asked per batch (_drop_duplicates)
            self._duplicate(item)
            self._accepted.append(item)
            self._wake.set()
            return
        self._inproc.add(key2)
        item.props = (
            ("idmz-device", device),
            ("idmz-cert-sha256", self._inspector.revocation.fingerprints.get(device, "unknown")),
            ("idmz-policy-sha256", self.policy.content_hash),
            ("idmz-msg-id", item.msg_id),
        )
        self._accepted.append(item)  # routed by the committer once audited
        if len(self._accepted) >= self._limits.audit_batch_max:
            self._wake.set()

    def _duplicate(self, item: _Item) -> None:
        item.duplicate = item.it_done = True
        with self.stats.lock:
            self.stats.duplicates += 1

    def _drop_duplicates(self, accepted: list[_Item]) -> None:
        """Mark the messages of a batch that are already safe (here or in another worker),
        with one query to the shared window for the whole batch."""
        fresh = [i for i in accepted if not i.duplicate]
        if not fresh:
            return
        known = self._dedup.seen_many([(i.device, i.msg_id) for i in fresh])
        if not known:
            return
        for item in fresh:
            if (item.device, item.msg_id) in known:
                self._duplicate(item)
        with self._lock:
            self._inproc.difference_update(known)

    def _route(self, item: _Item) -> None:
        """Direct to IT when possible, else spool; keeps each device's order."""
        with self._lock:
            direct = not self._held and self._it.up and not self._spooled_count.get(item.device)
        if direct and self._it.publish(item.topic, item.payload, item.props, item):
            return
        with self._lock:
            if self._held:
                self._held.append(item)
            else:
                self._spool_locked(item)

    def _spool_locked(self, item: _Item) -> None:
        try:
            self._spool.append(
                SpoolRecord(item.topic, item.device, item.msg_id, item.props, item.payload)
            )
        except SpoolFullError as exc:
            if not self._held:
                _log.error("spool full, holding messages unacknowledged on OT: %s", exc)
                with self.stats.lock:
                    self.stats.spool_full_events += 1
                    self.stats.spool_full = True
            self._held.append(item)
            return
        item.spooled = True
        self._spooled_count[item.device] += 1
        self._unsynced.append(item)
        with self.stats.lock:
            self.stats.spooled += 1

    def _on_ot_state(self, up: bool) -> None:
        with self.stats.lock:
            self.stats.ot_connected = up
        if not up:
            with self._lock:  # deliveries of a lost connection come again; forget them here
                self._inproc.clear()

    # -- IT callbacks ---------------------------------------------------------------------

    def _on_it_acked(self, ref: object, reason_code: int) -> None:
        self._it_acks.append((ref, reason_code))  # the IT link thread: only queue
        self._acks_in += 1  # written by the IT link thread only
        if not self._wake.is_set():  # Event.set takes a lock and notifies: once per cycle
            self._wake.set()

    def _on_it_down(self, refs: Sequence[object]) -> None:
        with self._lock:
            for ref in refs:
                if isinstance(ref, _Item) and not ref.it_done:
                    self._spool_locked(ref)
            self._drain_gen += 1
            self._drain_out.clear()
            self._read_offset = self._spool.cursor
        with self.stats.lock:
            self.stats.it_connected = False
        self._wake.set()

    def _on_it_up(self, session_present: bool) -> None:
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
                self._spooled_count = Counter(r.device for r in self._spool.records())
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
                self._commit_cycle()
            except Exception:  # noqa: BLE001 - the loop must survive; logged, retried
                _log.exception("%s: commit cycle failed; retrying", self.name)
                time.sleep(0.5)
            if time.monotonic() - last_prune > 60:
                last_prune = time.monotonic()
                self._dedup.prune(time.time())

    def _commit_cycle(self) -> None:
        touched: list[_Item] = []
        retained: list[_Fields] = []  # acknowledged by IT: kept for it_retention_s
        refused: list[tuple[_DrainRef, int]] = []
        popped = 0
        while self._it_acks:
            ref, code = self._it_acks.popleft()
            popped += 1
            if isinstance(ref, _Item):
                if code < 0x80:
                    ref.it_done = True
                    touched.append(ref)
                    retained.append((ref.topic, ref.device, ref.msg_id, ref.props, ref.payload))
                else:  # permanent (MQTT 5 §2.4): never retried in order, kept aside
                    self._dead.append(_Dead(ref, self._refused_letter(ref.topic, ref, code)))
            elif isinstance(ref, _DrainRef):
                if code >= 0x80:
                    refused.append((ref, code))
                elif ref.gen == self._drain_gen and not ref.acked:
                    ref.acked = True
                    rec = ref.rec
                    retained.append(
                        (rec.topic, rec.device, rec.msg_id, rec.properties, rec.payload)
                    )
        try:
            self._commit_batch(touched)  # audit and route what arrived: IT gets it sooner
        finally:
            try:
                if retained:  # one fdatasync per cycle, before the cursor moves or OT is acked
                    self._retain(retained)
            finally:
                if popped:
                    with self._acks_cv:
                        self._acks_done += popped
                        self._acks_cv.notify_all()
        for ref, code in refused:
            with self._lock:  # the first refusal of a record of the current file counts
                first = ref.file_gen == self._spool.generation and ref.end not in self._dead_at
                if first:
                    self._dead_at[ref.end] = False
            if first:
                self._dead.append(_Dead(ref, self._refused_letter(ref.rec.topic, ref.rec, code)))
        self._advance_drain()
        with self._lock:
            if self._spool.dirty:
                self._spool.sync()  # raises before anything below counts as safe
            newly, self._unsynced = self._unsynced, []
        for item in newly:
            item.it_done = True
            touched.append(item)
        if self._buried:
            buried, self._buried = self._buried, []
            self._bury(buried, touched)
        self._complete(touched)

    def _retain(self, records: list[_Fields]) -> None:
        data = b"".join([encode_fields(*fields) for fields in records])
        with self._retention_lock:
            self._retention.append(data)
            self._retention.sync(time.time())

    def _commit_batch(self, touched: list[_Item]) -> None:
        """Audit what arrived (and the dead letters), then route it in arrival order."""
        self._retry_held()
        refusals = [self._refusals.popleft() for _ in range(len(self._refusals))]
        accepted = [self._accepted.popleft() for _ in range(len(self._accepted))]
        dead = [self._dead.popleft() for _ in range(len(self._dead))]
        self._drop_duplicates(accepted)
        if refusals or accepted or dead:
            if self._record(refusals, accepted, self._dead_letter_events(dead)):
                for item in refusals + accepted:
                    item.audit_done = True
                for item in accepted:
                    if not item.duplicate:
                        self._route(item)  # audited: now it may leave, in arrival order
                self._it.flush()
                touched.extend(refusals)
                touched.extend(accepted)
                self._buried = dead
            else:
                self._refusals.extendleft(reversed(refusals))
                self._accepted.extendleft(reversed(accepted))
                self._dead.extendleft(reversed(dead))
                time.sleep(0.2)

    # -- dead letters ---------------------------------------------------------------------

    def _refused_letter(self, topic: str, msg: _Item | SpoolRecord, code: int) -> DeadLetter:
        _log.error(
            "the IT broker refused %s from %s (%s); kept as a dead letter",
            msg.msg_id, msg.device, reason_name(code),
        )  # fmt: skip
        return DeadLetter(
            msg.device, msg.msg_id, topic, IT_REFUSED,
            f"the IT broker refused the publish ({reason_name(code)})", msg.payload, code,
        )  # fmt: skip

    def _dead_letter_events(self, dead: list[_Dead]) -> list[AuditEvent]:
        """Buffer each dead letter (once, also when the audit is retried) and its record."""
        events = []
        for entry in dead:
            if entry.kept is None:
                entry.kept = self._letters.append(entry.letter, time.time())
            events.append(dead_letter_event(entry.letter, self.name, kept=entry.kept))
        return events

    def _bury(self, buried: list[_Dead], touched: list[_Item]) -> None:
        """Audited: make the dead letters durable, then let each count as handled (the OT
        acknowledgement, or the spool cursor moving past it)."""
        self._letters.sync()
        lost = sum(1 for e in buried if not e.kept)
        if lost:
            _log.error(
                "ALARM dead-letter file %s is full (dead_letter_max_bytes=%d): %d payload(s) "
                "not kept; their audit records hold device, message id and SHA-256",
                self._letters.path, self._letters.max_bytes, lost,
            )  # fmt: skip
        ends = set()
        for entry in buried:
            if isinstance(entry.ref, _Item):
                entry.ref.dead = entry.ref.it_done = True
                touched.append(entry.ref)
            else:
                entry.ref.acked = True
                ends.add((entry.ref.file_gen, entry.ref.end))
        with self._lock:  # the same record may be in flight again since (see _dead_at)
            for file_gen, end in ends:
                if file_gen == self._spool.generation:
                    self._dead_at[end] = True
            for ref in self._drain_out:
                if (ref.file_gen, ref.end) in ends:
                    ref.acked = True
        with self.stats.lock:
            self.stats.dead_letters += len(buried)
            self.stats.dropped += lost
            self.stats.dead_letter_bytes = self._letters.size_bytes
            self.stats.dead_letter_full = self._letters.full
        self._advance_drain()

    def _record(
        self, refusals: list[_Item], accepted: list[_Item], extra: list[AuditEvent]
    ) -> bool:
        events: list[AuditEvent] = extra + [
            refusal_event(
                i.device or "unknown", i.topic, i.code, i.reason, i.msg_id, i.payload, self.name
            )
            for i in refusals
        ]
        if accepted:
            lines = [
                AcceptedLine(i.device, i.msg_id, hashlib.sha256(i.payload).digest(), i.duplicate)
                for i in accepted
            ]
            policy_hash = self.policy.content_hash
            if self.config.accepted_audit is AcceptedAudit.PER_MESSAGE:
                events += [
                    message_event(line, i.topic, policy_hash, self.name)
                    for line, i in zip(lines, accepted, strict=True)
                ]
            else:
                for start in range(0, len(lines), self._limits.audit_batch_max):
                    chunk = lines[start : start + self._limits.audit_batch_max]
                    digest = batch_digest(chunk, self._prev_digest)
                    events.append(
                        batch_event(chunk, digest, self._prev_digest, policy_hash, self.name)
                    )
                    self._prev_digest = digest
        try:
            if len(events) == 1:
                self._audit.record(events[0])
            else:
                self._audit.record_batch(events)  # one group commit for the whole cycle
        except AuditError as exc:
            with self.stats.lock:
                self.stats.audit_failures += 1
                self.stats.audit_ok = False
            if getattr(self._audit, "broken", False) and self._on_fatal is not None:
                # A failed fdatasync: this log object refuses everything until reopened, and
                # reopening is a restart (the OT broker keeps every unacknowledged message).
                self._on_fatal(f"audit log flush failed ({exc}); restarting to reopen it")
            if self._refuse_on_audit_failure:
                _log.error("audit unavailable (%s): holding %d messages", exc, len(events))
                return False
            _log.error(
                "ALARM audit unavailable (%s): forwarding unaudited (forward-and-alarm)", exc
            )
            return True
        with self.stats.lock:
            self.stats.audit_ok = True
        return True

    def _complete(self, touched: list[_Item]) -> None:
        remember: list[tuple[str, str]] = []
        forwarded: Counter[str] = Counter()
        now = self._clock()
        lat_sum = 0.0
        tokens = []
        for item in touched:
            if item.acked or not (item.audit_done and item.it_done):
                if item.audit_done and not item.it_done:
                    self._waiting[item.seq] = item
                continue
            self._waiting.pop(item.seq, None)
            item.acked = True
            tokens.append(item.token)
            if not item.code and not item.duplicate:
                remember.append((item.device, item.msg_id))
                if item.dead:
                    continue
                forwarded[item.device] += 1
                lat_sum += now - item.t0
        self._ot.ack_many(tokens)  # one socket write for the whole batch
        if remember:
            self._dedup.remember(remember, time.time())
            with self._lock:
                self._inproc.difference_update(remember)
        with self.stats.lock:
            st = self.stats
            st.forwarded += sum(forwarded.values())
            for device, n in forwarded.items():
                st.device_forwarded[st.device_key(st.device_forwarded, device)] += n
            st.latency_ms_sum += lat_sum * 1000
            st.latency_count += sum(forwarded.values())
            st.inflight = (
                len(self._accepted) + len(self._refusals) + len(self._waiting) + len(self._held)
            )

    def _retry_held(self) -> None:
        with self._lock:
            while self._held:
                item = self._held.popleft()
                before = len(self._held)
                self._spool_locked(item)
                if len(self._held) > before:  # still full: it went back to the end
                    self._held.rotate(1)
                    return
            with self.stats.lock:
                self.stats.spool_full = False

    # -- drainer --------------------------------------------------------------------------

    def _advance_drain(self) -> None:
        with self._lock:
            end = None
            while self._drain_out and self._drain_out[0].acked:
                ref = self._drain_out.popleft()
                end = ref.end
                left = self._spooled_count[ref.device] - 1
                if left > 0:
                    self._spooled_count[ref.device] = left
                else:
                    self._spooled_count.pop(ref.device, None)
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


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
