"""What a worker forwarded, kept for a while, because the IT broker may lose what it acknowledged.

Mosquitto acknowledges a QoS 1 publish once the message is in memory and writes its state to
disk only every ``autosave_interval`` (and on a clean stop). A crash (SIGKILL, OOM, power) of
the IT broker loses what it acknowledged since its last save: messages queued for an offline
persistent subscriber are gone, although the relay has already acknowledged them on OT. So each
worker keeps every message the IT broker acknowledged for ``it_retention_s`` (bounded by
``it_retention_max_bytes``) and puts them back in front of its spool when the broker may have
lost them (ADR 0081):

* the relay's IT session (persistent since this change) is not there any more (CONNACK
  session-present 0 although this worker had one): the broker lost its state;
* or the appliance bumped the *IT broker epoch* (``<state>/it-broker.epoch``) because the
  managed IT broker exited without being asked to, or a previous run ended without stopping it.

The records are appended in the committer's cycle and fsynced once per cycle, before the OT
acknowledgement (ADR 0050). Storage: segment files in the `relay.spool` record format, a new
segment every quarter of the window (or of the byte bound); whole segments are dropped once
their newest record is older than the window, or the oldest first while over the byte bound.

    retention = Retention(state / "retention", max_bytes=256 << 20, window_s=120)
    retention.append(encode_record(rec)); retention.sync(time.time())   # once per cycle
    if retention.lost_state(session_present=False, epoch=read_epoch(state)):
        spool.prepend(retention.records())
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bedrock.files import fsync_dir, write_atomic
from relay.ports import Fields
from relay.spool import RecordFile, SpoolRecord, encode_fields

_log = logging.getLogger("relay.retention")
EPOCH_FILE = "it-broker.epoch"  # written by the appliance, read by every worker
_HANDLED = "handled-epoch"  # per worker: the epoch whose loss it has replayed
_SESSION = "it-session"  # per worker: it has had an IT session (session-present 0 means loss)


def read_epoch(state_dir: Path) -> int:
    """The appliance's IT broker epoch (0 when it never lost state or is external)."""
    try:
        return int(json.loads((state_dir / EPOCH_FILE).read_text())["epoch"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return 0


def bump_epoch(state_dir: Path, reason: str) -> int:
    """The IT broker may have lost messages it acknowledged: every worker replays its
    retention when it next connects. Durable before the caller restarts the broker."""
    epoch = read_epoch(state_dir) + 1
    body = json.dumps({"epoch": epoch, "reason": reason[:500]}).encode()
    write_atomic(state_dir / EPOCH_FILE, body, 0o600)
    _log.warning("IT broker epoch %d: %s; workers re-send what it may have lost", epoch, reason)
    return epoch


@dataclass
class _Segment:
    seq: int
    file: RecordFile
    first_wall: float
    last_wall: float


class Retention:
    """Not thread-safe: the worker calls it under its own lock or from its committer."""

    def __init__(self, directory: Path, *, max_bytes: int, window_s: float, now: float) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self.max_bytes = max_bytes
        self.window_s = window_s
        self._segments: list[_Segment] = []
        for path in sorted(directory.glob("seg-*.dat")):
            mtime = path.stat().st_mtime
            seq = int(path.stem.split("-")[1])
            self._segments.append(_Segment(seq, RecordFile(path), mtime, mtime))
        self._rotate(now)
        self._expire(now)

    # -- writing (committer) ------------------------------------------------------------

    def append(self, data: bytes) -> None:
        """Buffer encoded records (`relay.spool.encode_fields`); durable after `sync`."""
        self._segments[-1].file.append(data)

    @property
    def dirty(self) -> bool:
        return self._segments[-1].file.dirty

    def sync(self, now: float) -> None:
        """Make the appended records durable (one fsync), then rotate and expire."""
        current = self._segments[-1]
        if current.file.dirty:
            current.file.sync()
            current.last_wall = now
        if current.file.end and (
            current.file.end >= self.max_bytes // 4 or now - current.first_wall >= self.window_s / 4
        ):
            self._rotate(now)
        self._expire(now)

    @property
    def size_bytes(self) -> int:
        return sum(s.file.end for s in self._segments)

    def _rotate(self, now: float) -> None:
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = self.directory / f"seg-{seq:010d}.dat"
        self._segments.append(_Segment(seq, RecordFile(path), now, now))
        fsync_dir(self.directory)

    def _expire(self, now: float) -> None:
        total = self.size_bytes
        while len(self._segments) > 1:
            oldest = self._segments[0]
            if now - oldest.last_wall <= self.window_s and total <= self.max_bytes:
                break
            total -= oldest.file.end
            oldest.file.close()
            oldest.file.path.unlink(missing_ok=True)
            del self._segments[0]

    # -- replay -------------------------------------------------------------------------

    def records(self) -> Iterator[SpoolRecord]:
        """Every retained record, oldest first (durable ones only: call after `sync`)."""
        for seg in list(self._segments):
            offset = 0
            while offset < seg.file.end:
                batch = seg.file.read(offset, 256)
                for _end, rec in batch:
                    yield rec
                offset = batch[-1][0]

    def lost_state(self, *, session_present: bool, epoch: int) -> str:
        """Why the IT broker may have lost what it acknowledged ("" when it did not)."""
        reasons = []
        if not session_present and (self.directory / _SESSION).exists():
            reasons.append("the IT broker no longer has the relay's session")
        if epoch > self._read_int(_HANDLED):
            reasons.append(f"the appliance reports a new IT broker epoch ({epoch})")
        return "; ".join(reasons)

    def mark_handled(self, epoch: int) -> None:
        """Connected with a session, and any loss up to ``epoch`` is back in the spool."""
        if epoch > self._read_int(_HANDLED):
            write_atomic(self.directory / _HANDLED, str(epoch).encode(), 0o600)
        if not (self.directory / _SESSION).exists():
            write_atomic(self.directory / _SESSION, b"1", 0o600)

    def _read_int(self, name: str) -> int:
        try:
            return int((self.directory / name).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def close(self) -> None:
        for seg in self._segments:
            seg.file.close()
        self._segments.clear()


__all__ = ["EPOCH_FILE", "Retention", "bump_epoch", "read_epoch"]


class Retainer:
    """The `relay.ports.Retainer` over a `Retention` log (``lock`` shared with the IT-up
    replay): what IT acknowledged, appended and fdatasynced in one call."""

    def __init__(self, retention: Retention, lock: threading.Lock) -> None:
        self.retention, self.lock = retention, lock

    def retain(self, records: Sequence[Fields]) -> None:
        data = b"".join([encode_fields(*fields) for fields in records])
        with self.lock:
            self.retention.append(data)
            self.retention.sync(time.time())
