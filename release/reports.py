"""What gateways say about their releases, read from their status messages on the IT side.

A gateway has no audit log of its own: it reports what it activated or refused in its status
message (`policies.release.STATUS_SECTION`), which the relay forwards to IT with the sender's
identity verified. ``idmz release reports`` reads those messages (JSON lines, as
``mosquitto_sub -t '+/+/+/+/+/+/status' -F %p`` prints them) and turns each result it has not
seen before into an audit record (``edge.release.activated`` / ``edge.release.refused``), and
keeps what each gateway runs for ``idmz release status``.

    >>> events, running = read_reports(lines, seen=set())                      # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from audit.events import AuditEvent, Outcome
from policies.envelope import claims
from policies.release import STATUS_SECTION

MAX_LINE_BYTES = 256 * 1024
# A gateway reports its last two results (edge.updates.STATUS_RESULTS); more in one message is
# not a gateway speaking. What is remembered as recorded is bounded per gateway, so one
# gateway in an attacker's hands can neither grow it without end nor push out the others'
# (which would then be recorded again, as duplicates in the change-control record).
MAX_RESULTS_PER_MESSAGE = 20
SEEN_PER_DEVICE = 64


@dataclass(frozen=True, slots=True)
class Reports:
    events: list[AuditEvent]
    running: dict[str, dict[str, int]]  # identity -> kind -> release in service
    seen: list[str]  # keys of the results recorded (so a result is recorded once), oldest first


def read_reports(lines: Iterable[str], seen: Iterable[str]) -> Reports:
    events: list[AuditEvent] = []
    running: dict[str, dict[str, int]] = {}
    order = list(seen)
    known = set(order)
    for line in lines:
        if not line.strip() or len(line) > MAX_LINE_BYTES:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        said = claims(doc)
        data = doc.get("data") if isinstance(doc, dict) else None
        section = data.get(STATUS_SECTION) if isinstance(data, dict) else None
        if said.device is None or said.kind != "status" or not isinstance(section, dict):
            continue
        run = section.get("running")
        if isinstance(run, dict):
            running[said.device] = {str(k): v for k, v in run.items() if type(v) is int}
        last = section.get("last")
        for r in last[:MAX_RESULTS_PER_MESSAGE] if isinstance(last, list) else []:
            if not isinstance(r, dict) or r.get("result") not in ("activated", "refused"):
                continue
            key = (
                f"{said.device}|{r.get('at')}|{r.get('kind')}|{r.get('release')}|{r.get('result')}"
            )
            if key in known:
                continue
            known.add(key)
            order.append(key)
            ok = r["result"] == "activated"
            events.append(
                AuditEvent(
                    actor=said.device,
                    action="edge.release.activated" if ok else "edge.release.refused",
                    resource=str(r.get("kind", "")),
                    outcome=Outcome.SUCCESS if ok else Outcome.DENIED,
                    reason=str(r.get("reason", ""))[:500],
                    zone="ot",
                    details={
                        "release": r.get("release") if type(r.get("release")) is int else None
                    },
                )
            )
    return Reports(events, running, bounded(order))


def bounded(keys: list[str]) -> list[str]:
    """The newest `SEEN_PER_DEVICE` keys of each gateway, in their order."""
    left: dict[str, int] = {}
    kept: list[str] = []
    for key in reversed(keys):
        device = key.split("|", 1)[0]
        if left.setdefault(device, SEEN_PER_DEVICE) > 0:
            left[device] -= 1
            kept.append(key)
    return kept[::-1]
