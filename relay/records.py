"""The audit events the relay writes, built from what happened (never from payload contents).

* ``relay.message.refused``: one record per refused message (actor = the device, or the topic's
  first levels when no device can be named; reason = the stable code and its text; details hold
  the message id and the payload's SHA-256 and size, never the payload). The code is a
  `policies.ReasonCode`; ``inspection_error`` says the checks
  themselves failed on the message (a defect): it was refused, not judged (ADR 0059).
* ``relay.batch.forwarded``: one record per commit batch of accepted messages: counts, the
  first and last message id, and ``digest``, a SHA-256 over the batch's per-message lines
  (``device \\0 msg_id \\0 sha256(payload)``), chained to the previous batch's digest
  (``prev``) of the same worker. Given the forwarded messages (IT consumers have them, with
  ``idmz-msg-id``), anyone can recompute the digest.
* ``relay.message.forwarded``: per message, when ``accepted_audit = "per-message"``.
* ``relay.device.cutoff``: a device's certificates are all revoked (once per change).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import NamedTuple

from audit.errors import AuditError
from audit.events import AuditEvent, Outcome
from relay.config import AcceptedAudit
from relay.ports import AuditPort
from relay.stats import WorkerStats

_log = logging.getLogger("relay.worker")


class AcceptedLine(NamedTuple):
    """One accepted message in a batch record (a tuple: built for every message)."""

    device: str
    msg_id: str
    payload_sha256: bytes
    duplicate: bool


def refusal_event(
    actor: str, topic: str, code: str, reason: str, msg_id: str, payload: bytes, worker: str
) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action="relay.message.refused",
        resource=topic[:512],
        outcome=Outcome.DENIED,
        reason=f"{code}: {reason}"[:1000],
        details={
            "code": code,
            "msg_id": msg_id,
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload_bytes": len(payload),
            "worker": worker,
        },
    )


def batch_digest(lines: Sequence[AcceptedLine], prev: str) -> str:
    h = hashlib.sha256(prev.encode())
    for line in lines:
        h.update(line.device.encode())
        h.update(b"\0")
        h.update(line.msg_id.encode())
        h.update(b"\0")
        h.update(line.payload_sha256)
        h.update(b"\n")
    return h.hexdigest()


def batch_event(
    lines: Sequence[AcceptedLine], digest: str, prev: str, policy_sha256: str, worker: str
) -> AuditEvent:
    duplicates = sum(1 for x in lines if x.duplicate)
    return AuditEvent(
        actor=worker,
        action="relay.batch.forwarded",
        resource="ot->it",
        outcome=Outcome.SUCCESS,
        details={
            "count": len(lines) - duplicates,
            "duplicates": duplicates,
            "devices": len({x.device for x in lines}),
            "first_msg_id": lines[0].msg_id,
            "last_msg_id": lines[-1].msg_id,
            "digest": digest,
            "prev": prev,
            "policy_sha256": policy_sha256,
        },
    )


def message_event(line: AcceptedLine, topic: str, policy_sha256: str, worker: str) -> AuditEvent:
    return AuditEvent(
        actor=line.device,
        action="relay.message.forwarded",
        resource=topic[:512],
        outcome=Outcome.SUCCESS,
        details={
            "msg_id": line.msg_id,
            "payload_sha256": line.payload_sha256.hex(),
            "duplicate": line.duplicate,
            "policy_sha256": policy_sha256,
            "worker": worker,
        },
    )


def cutoff_event(device: str, crl_number: int | None, worker: str) -> AuditEvent:
    return AuditEvent(
        actor=worker,
        action="relay.device.cutoff",
        resource=device,
        outcome=Outcome.SUCCESS,
        reason="every certificate of the device is revoked; the relay refuses its messages",
        details={"crl_number": crl_number},
    )


class Recorder:
    """Writes one commit cycle's records as one group commit: the given events, then the
    accepted messages per message or as chained batch records (``accepted_audit``). False when
    the log could not record and ``on_audit_failure = "refuse"`` (nothing may move); with
    ``forward-and-alarm`` the alarm is logged and True returned."""

    def __init__(
        self, audit: AuditPort, stats: WorkerStats, *, worker: str, policy_hash: str,
        accepted_audit: AcceptedAudit, batch_max: int, refuse_on_failure: bool,
        on_broken: Callable[[str], None] | None,
    ) -> None:  # fmt: skip
        self._audit, self._stats, self._worker = audit, stats, worker
        self._policy_hash, self._mode, self._batch_max = policy_hash, accepted_audit, batch_max
        self._refuse, self._on_broken = refuse_on_failure, on_broken
        self._prev_digest = ""

    def record(
        self, events: list[AuditEvent], accepted: Sequence[tuple[AcceptedLine, str]]
    ) -> bool:
        if accepted:
            events = events + self._accepted_events(accepted)
        if not events:
            return True
        try:
            if len(events) == 1:
                self._audit.record(events[0])
            else:
                self._audit.record_batch(events)  # one group commit for the whole cycle
        except AuditError as exc:
            with self._stats.lock:
                self._stats.audit_failures += 1
                self._stats.audit_ok = False
            if self._audit.broken and self._on_broken is not None:
                # A failed fdatasync: this log object refuses everything until reopened, and
                # reopening is a restart (the OT broker keeps every unacknowledged message).
                self._on_broken(f"audit log flush failed ({exc}); restarting to reopen it")
            if self._refuse:
                _log.error("audit unavailable (%s): holding %d messages", exc, len(events))
                return False
            _log.error(
                "ALARM audit unavailable (%s): forwarding unaudited (forward-and-alarm)", exc
            )
            return True
        with self._stats.lock:
            self._stats.audit_ok = True
        return True

    def _accepted_events(self, accepted: Sequence[tuple[AcceptedLine, str]]) -> list[AuditEvent]:
        if self._mode is AcceptedAudit.PER_MESSAGE:
            return [
                message_event(line, topic, self._policy_hash, self._worker)
                for line, topic in accepted
            ]
        lines = [line for line, _ in accepted]
        events = []
        for start in range(0, len(lines), self._batch_max):
            chunk = lines[start : start + self._batch_max]
            digest = batch_digest(chunk, self._prev_digest)
            events.append(
                batch_event(chunk, digest, self._prev_digest, self._policy_hash, self._worker)
            )
            self._prev_digest = digest
        return events
