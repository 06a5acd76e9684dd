"""The loads bench/relay.py can send: a payload generator and a name each (`Profile`).

A new load (a Sparkplug profile, say) lives in its own module in this package, builds a
`Profile` and adds it to `PROFILES` (register it by importing that module at the end of this
one); then ``bench/relay.py --profiles envelope,<name>`` runs it in the same run, one RESULT
line each. (A package, so that ``make bench``, which runs every ``bench/*.py``, skips it.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Profile:
    """A load: its name, the topic a device publishes on, one payload (``device``, a message id
    unique in the run, the time it is sent) and how to read that time back from a received
    payload. Payloads go through ``mosquitto_pub -l``: one line each, so no newline byte.
    ``policy`` adapts the bench policy text if the load needs more than the example policy."""

    name: str
    topic: Callable[[str], str]
    payload: Callable[[str, str, float], bytes]
    sent_at: Callable[[bytes], float]
    policy: Callable[[str], str] = field(default=_same)


def _envelope(device: str, msg_id: str, t: float) -> bytes:
    return json.dumps(
        {"v": 1, "id": msg_id, "ts": "2026-11-22T10:00:00.000Z", "device": device,
         "kind": "telemetry", "data": {"t": t, "tags": []}},
        separators=(",", ":"),
    ).encode()  # fmt: skip


ENVELOPE = Profile(
    name="envelope",
    topic=lambda device: f"{device}/telemetry",
    payload=_envelope,
    sent_at=lambda payload: float(json.loads(payload)["data"]["t"]),
)
PROFILES: dict[str, Profile] = {ENVELOPE.name: ENVELOPE}
