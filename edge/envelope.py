"""The envelope every gateway message travels in, and its topic (docs/contracts.md section 4).

``{"v": 1, "id", "ts", "device", "kind", "data"}``, compact JSON (no NaN), published under the
device's identity path. The field names are `policies.envelope.Envelope`'s (the contract's
owner); this module adds the gateway's clock format and topic.

>>> envelope_topic("acme/p/a/l/c/gw", "anomaly", "events/anomaly")
'acme/p/a/l/c/gw/events/anomaly'
>>> envelope_bytes("0190", 0.0, "acme/p/a/l/c/gw", "status", {"ok": 1})
b'{"v":1,"id":"0190","ts":"1970-01-01T00:00:00.000Z","device":"acme/p/a/l/c/gw","kind":"status","data":{"ok":1}}'
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.tagmap import iso_ts
from policies.envelope import Envelope


def envelope_bytes(
    msg_id: str, now: float, device: str, kind: str, data: Mapping[str, object]
) -> bytes:
    """One message, as it is stored in the outbox and published (``now`` in POSIX s)."""
    return Envelope(msg_id, iso_ts(now), device, kind, data).to_json()


def envelope_topic(device: str, kind: str, subtopic: str | None = None) -> str:
    """``<device>/<kind>``, or ``<device>/<subtopic>`` (anomaly events go to events/anomaly)."""
    return f"{device}/{subtopic or kind}"
