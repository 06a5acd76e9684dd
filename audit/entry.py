"""The stored form of one audit entry (ADR 0020): canonical JSON of the caller's event plus
the fields only the log stamps (``seq``, ``time``, ``time_source``, ``host``, ``v``)."""

from __future__ import annotations

import json

from audit.errors import InvalidEventError
from audit.events import AuditEvent, Outcome

ENTRY_VERSION = 1
STAMPED_FIELDS = ("seq", "time", "time_source", "host", "v")


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no whitespace, ASCII only (so an entry never contains a raw newline)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


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
        "outcome": Outcome(event.outcome).value,
        "reason": event.reason,
        "before": dict(event.before) if event.before is not None else None,
        "after": dict(event.after) if event.after is not None else None,
        "zone": event.zone,
        "details": dict(event.details),
    }
