"""The drain: spooled messages to IT, in order, at ``drain_rate_per_s`` (docs/relay.md step 6).

The pipeline (`relay.pipeline`) spools what cannot go direct; the drain reads the spool from its
cursor, publishes each record, and moves the cursor over the prefix the IT broker acknowledged,
so each device's spooled messages leave in the order they arrived and only then may its next
ones go direct (`Pipeline.spooled_count`). A record the IT broker refuses, or of a device
revoked while it waited, becomes a dead letter (ADR 0080): audited in the worker's commit cycle,
kept, and passed over. It shares the pipeline's lock; the worker runs ``loop`` on its thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from audit.events import AuditEvent
from policies import ReasonCode
from relay.deadletter import DeadLetter, DeadLetters, dead_letter_event, refused_by_it
from relay.pipeline import Pipeline
from relay.ports import Fields, ITLink
from relay.spool import Spool, SpoolRecord
from relay.stats import WorkerStats

WINDOW = 256  # spooled records in flight to IT at most


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


class Drain:
    def __init__(
        self, name: str, *, spool: Spool, it: ITLink, pipeline: Pipeline, letters: DeadLetters,
        stats: WorkerStats, rate_per_s: float, revoked: Callable[[], frozenset[str]],
        wake: Callable[[], None],
    ) -> None:  # fmt: skip
        self.name, self._spool, self._it, self._pipe = name, spool, it, pipeline
        self._letters, self.stats, self._rate = letters, stats, rate_per_s
        self._revoked, self._wake = revoked, wake
        self._lock = pipeline.lock
        self._read_offset = spool.cursor
        self._gen = 0  # the IT connection's: refs of an older one are stale
        self._out: deque[_DrainRef] = deque()
        self._dead: deque[_Dead] = deque()  # refused or revoked: for the next audit
        # Spool records (by end offset in the current file) that are dead letters: False while
        # being audited, True once kept. Mosquitto 2.0.11 closes the connection after refusing
        # a publish, so the drain re-reads the record before the refusal is even handled: it
        # must not send it again (that would be refused and disconnected again, forever).
        self._dead_at: dict[int, bool] = {}

    def restart_locked(self, *, replayed: bool) -> None:
        """The IT connection dropped (or the retention was put back in front of the spool,
        ``replayed``): what was in flight is sent again from the cursor. Hold the lock."""
        self._gen += 1
        self._out.clear()
        self._read_offset = 0 if replayed else self._spool.cursor
        if replayed:
            self._dead_at.clear()

    def answer(self, ref: object, code: int, retained: list[Fields]) -> bool:
        """The IT broker's answer to a drained record (False: ``ref`` is not the drain's)."""
        if not isinstance(ref, _DrainRef):
            return False
        if code >= 0x80:
            self._refused(ref, code)
        elif ref.gen == self._gen and not ref.acked:
            ref.acked = True
            rec = ref.rec
            retained.append((rec.topic, rec.device, rec.msg_id, rec.properties, rec.payload))
        return True

    def take_dead(self) -> list[_Dead]:
        return [self._dead.popleft() for _ in range(len(self._dead))]

    def requeue_dead(self, dead: list[_Dead]) -> None:
        self._dead.extendleft(reversed(dead))

    def _refused(self, ref: _DrainRef, code: int) -> None:
        with self._lock:  # the first refusal of a record of the current file counts
            first = ref.file_gen == self._spool.generation and ref.end not in self._dead_at
            if first:
                self._dead_at[ref.end] = False
        if first:
            rec = ref.rec
            letter = refused_by_it(rec.device, rec.msg_id, rec.topic, rec.payload, code)
            self._dead.append(_Dead(ref, letter))

    def dead_events(self, dead: list[_Dead]) -> list[AuditEvent]:
        """Buffer each dead letter (once, also when the audit is retried) and its record."""
        events = []
        for entry in dead:
            if entry.kept is None:
                entry.kept = self._letters.append(entry.letter, time.time())
            events.append(dead_letter_event(entry.letter, self.name, kept=entry.kept))
        return events

    def bury(self, buried: list[_Dead]) -> None:
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
            for ref in self._out:
                if (ref.file_gen, ref.end) in ends:
                    ref.acked = True
        self.stats.count_dead_letters(len(buried), lost)
        self.advance()

    def advance(self) -> None:
        with self._lock:
            end = None
            while self._out and self._out[0].acked:
                ref = self._out.popleft()
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

    def loop(self, stop: threading.Event) -> None:
        rate = self._rate
        tokens, last = 0.0, time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            tokens = min(max(rate / 10, 1.0), tokens + (now - last) * rate)
            last = now
            with self._lock:
                ready = self._it.up and self._read_offset < self._spool.end
                room = WINDOW - len(self._out)
                gen, file_gen = self._gen, self._spool.generation
                batch = (
                    self._spool.read(self._read_offset, min(room, int(tokens)))
                    if ready and room > 0 and tokens >= 1
                    else []
                )
            if not batch:
                stop.wait(0.02)
                continue
            revoked = self._revoked()
            for end, rec in batch:
                ref = _DrainRef(end, rec, gen, file_gen)
                with self._lock:
                    dead = self._dead_at.get(end)
                if dead is not None or rec.device in revoked:  # never sent (again)
                    with self._lock:
                        if gen != self._gen:
                            break
                        self._read_offset = end
                        self._out.append(ref)
                        if dead is None:  # revoked while it waited: refused here
                            self._dead_at[end] = False
                        ref.acked = bool(dead)  # a dead letter already kept
                    if dead is None:
                        self._dead.append(_Dead(ref, _revoked_letter(rec)))
                        self._wake()
                    continue
                if not self._it.publish(rec.topic, rec.payload, rec.properties, ref):
                    break
                tokens -= 1
                with self._lock:
                    if gen != self._gen:
                        break
                    self._read_offset = end
                    self._out.append(ref)
            self._it.flush()


def _revoked_letter(rec: SpoolRecord) -> DeadLetter:
    return DeadLetter(
        rec.device, rec.msg_id, rec.topic, ReasonCode.CERTIFICATE_REVOKED.value,
        "every certificate of the device was revoked while the message waited in the spool",
        rec.payload,
    )  # fmt: skip
