"""The stored form of one audit entry (ADR 0020): canonical JSON of the caller's event plus
the fields only the log stamps (``seq``, ``time``, ``time_source``, ``host``, ``v``)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from audit.errors import InvalidEventError
from audit.events import AuditEvent, Outcome

ENTRY_VERSION = 1
STAMPED_FIELDS = ("seq", "time", "time_source", "host", "v")


# One immutable encoder (json.dumps would build a new one per call with these options).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, ASCII only (so an entry never contains a raw newline)."""
    return _CANONICAL.encode(obj).encode()


def event_fields(event: AuditEvent) -> dict[str, object]:
    if not event.actor or not event.action or not event.resource:
        raise InvalidEventError("an audit event needs an actor, an action and a resource")
    if not event.reason and (
        event.outcome is not Outcome.SUCCESS or event.action.startswith("operator.")
    ):
        raise InvalidEventError(f"{event.action}: refusals and manual actions need a reason")
    return {
        "v": ENTRY_VERSION,
        "actor": event.actor,
        "action": event.action,
        "resource": event.resource,
        "outcome": outcome.value
        if type(outcome := event.outcome) is Outcome
        else Outcome(outcome).value,
        "reason": event.reason,
        "before": dict(event.before) if event.before is not None else None,
        "after": dict(event.after) if event.after is not None else None,
        "zone": event.zone,
        "details": dict(event.details),
    }


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event encoded ahead of the lock: the canonical JSON before ``"seq"`` (keys sorting
    before it, ``host`` included) and after ``"time_source"`` (``v``, ``zone``). Under the
    lock only the sequence number and time are spliced in, so the critical section is a
    few string joins and one SHA-256 per entry."""

    head: bytes  # b'{"action":...,"resource":"...",'
    tail: bytes  # b',"v":1,"zone":"..."}'

    def entry(self, seq: int, stamp: bytes) -> bytes:
        """The stored entry; ``stamp`` is `encode_stamp` output for the batch."""
        return b"".join((self.head, b'"seq":', str(seq).encode(), stamp, self.tail))


def encode_event(event: AuditEvent, host: str) -> EncodedEvent:
    """Validate and encode ``event``; raises `InvalidEventError` for an event that can never
    be recorded. ``entry(seq, stamp)`` equals `canonical_json` of the full record."""
    fields = event_fields(event)
    fields["host"] = host
    del fields["v"]
    zone = fields.pop("zone")
    try:
        head = canonical_json(fields)
        tail = _tail(zone) if type(zone) is str or zone is None else _tail_of(zone)
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(f"event is not JSON-safe: {exc}") from exc
    return EncodedEvent(head[:-1] + b",", tail)


def _tail_of(zone: object) -> bytes:
    return b"," + canonical_json({"v": ENTRY_VERSION, "zone": zone})[1:]


@functools.lru_cache(maxsize=64)
def _tail(zone: str | None) -> bytes:
    """The members after ``time_source`` (``v``, ``zone``): a handful of zones, so remembered
    (an encoder call less per event)."""
    return _tail_of(zone)


def encode_stamp(time: str, time_source: str) -> bytes:
    """The ``"time"`` and ``"time_source"`` members that follow ``"seq"`` in every entry."""
    return b',"time":' + canonical_json(time) + b',"time_source":' + canonical_json(time_source)
