"""Messages the relay accepted and audited but will never deliver, kept for the operator.

Two ways in: the IT broker refused the publish for good (PUBACK reason >= 0x80, e.g. 0x87 when
the IT ACL no longer lists the device), or the device was revoked while its messages waited in
the spool. Each one is audited (`dead_letter_event`) and appended to ``dead-letters.jsonl`` in
the worker's state directory (mode 0600, one JSON line: time, worker, device, message id, topic,
refusal code and reason, payload SHA-256, the payload in base64), and the spool drain moves on:
one refused message can never hold back another device's data (ADR 0080).

The file is bounded by ``dead_letter_max_bytes``. When the next line does not fit, the payload
is not kept (the audit record still names the device, message id and payload SHA-256), the
``dead_letter_full`` alarm is raised (metric, /health) and ``dropped_total`` counts it. The
operator empties the file (moves it away); the next append starts a new one.

    letters = DeadLetters(state / "dead-letters.jsonl", max_bytes=64 << 20)
    kept = letters.append(DeadLetter(device, msg_id, topic, "it_refused", reason, payload), now)
    letters.sync()  # before the OT acknowledgement or the spool cursor moves past it
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from audit.events import AuditEvent, Outcome
from relay.mqtt_codec import reason_name

_log = logging.getLogger("relay.worker")

IT_REFUSED = "it_refused"  # the IT broker's PUBACK reason was >= 0x80
REFUSED_BY_IT_ACTION = "relay.message.refused_by_it"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    device: str
    msg_id: str
    topic: str
    code: str  # IT_REFUSED or the inspector's code (``certificate_revoked``)
    reason: str
    payload: bytes
    it_reason_code: int | None = None  # the PUBACK reason code, for IT_REFUSED


class DeadLetters:
    """Not thread-safe: the worker's committer thread is the only writer."""

    def __init__(self, path: Path, *, max_bytes: int, worker: str) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._worker = worker
        self._buffer: list[bytes] = []
        self._fd = -1
        self._size = 0
        self.full = False
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(self._fd, 0o600)  # also when an older file had another mode
        self._size = os.fstat(self._fd).st_size

    @property
    def size_bytes(self) -> int:
        return self._size + sum(len(b) for b in self._buffer)

    def append(self, letter: DeadLetter, now_wall: float) -> bool:
        """Buffer one line; False (and ``full``) when it would pass ``max_bytes``."""
        if self._moved_away():
            self._reopen()
        line = (
            json.dumps(
                {
                    "ts": round(now_wall, 3),
                    "worker": self._worker,
                    "device": letter.device,
                    "msg_id": letter.msg_id,
                    "topic": letter.topic,
                    "code": letter.code,
                    "it_reason_code": letter.it_reason_code,
                    "reason": letter.reason,
                    "payload_sha256": hashlib.sha256(letter.payload).hexdigest(),
                    "payload_b64": base64.b64encode(letter.payload).decode(),
                },
                separators=(",", ":"),
                ensure_ascii=True,
            ).encode()
            + b"\n"
        )
        if self.size_bytes + len(line) > self.max_bytes:
            self.full = True
            return False
        self._buffer.append(line)
        return True

    @property
    def dirty(self) -> bool:
        return bool(self._buffer)

    def sync(self) -> None:
        """Write the buffered lines and fsync them."""
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self._size += len(data)
        self._buffer.clear()

    def alarm_lost(self, count: int) -> None:
        """The alarm for ``count`` payloads not kept because the file is full."""
        _log.error(
            "ALARM dead-letter file %s is full (dead_letter_max_bytes=%d): %d payload(s) "
            "not kept; their audit records hold device, message id and SHA-256",
            self.path, self.max_bytes, count,
        )  # fmt: skip

    def _moved_away(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return True

    def _reopen(self) -> None:
        self.sync()
        os.close(self._fd)
        self._open()
        self.full = self._size >= self.max_bytes

    def close(self) -> None:
        self.sync()
        os.close(self._fd)


def refused_by_it(device: str, msg_id: str, topic: str, payload: bytes, code: int) -> DeadLetter:
    """The dead letter for a publish the IT broker refused with ``code`` (logged)."""
    _log.error(
        "the IT broker refused %s from %s (%s); kept as a dead letter",
        msg_id, device, reason_name(code),
    )  # fmt: skip
    return DeadLetter(
        device, msg_id, topic, IT_REFUSED,
        f"the IT broker refused the publish ({reason_name(code)})", payload, code,
    )  # fmt: skip


def dead_letter_event(letter: DeadLetter, worker: str, *, kept: bool) -> AuditEvent:
    """``relay.message.refused_by_it`` for an IT refusal; ``relay.message.refused`` (stage
    ``spool``) for a message of a device revoked while it waited. Never the payload."""
    refused_by_it = letter.code == IT_REFUSED
    return AuditEvent(
        actor=letter.device,
        action=REFUSED_BY_IT_ACTION if refused_by_it else "relay.message.refused",
        resource=letter.topic[:512],
        outcome=Outcome.DENIED,
        reason=f"{letter.code}: {letter.reason}"[:1000],
        details={
            "code": letter.code,
            "msg_id": letter.msg_id,
            "reason_code": letter.it_reason_code,
            "stage": "it" if refused_by_it else "spool",
            "payload_sha256": hashlib.sha256(letter.payload).hexdigest(),
            "payload_bytes": len(letter.payload),
            "dead_letter": "kept" if kept else "not kept: dead-letter file full",
            "worker": worker,
        },
    )
