"""Gateways' release results, read from their status messages on the IT side."""

from __future__ import annotations

from policies.envelope import Envelope
from release.reports import read_reports

GW = "acme/plant1/press/line1/cell1/gw-a"


def status(device: str, last: list[dict[str, object]], kind: str = "status") -> str:
    data = {"release": {"running": {"model": 3, "config": 0}, "checks": 9, "last": last}}
    return Envelope("1", "2026-12-07T00:00:00.000Z", device, kind, data).to_json().decode()


ACTIVATED = {"at": 1.0, "kind": "model", "result": "activated", "release": 3, "reason": "m"}
REFUSED = {"at": 2.0, "kind": "model", "result": "refused", "release": 4, "reason": "bad sig"}


def test_each_result_is_recorded_once_across_repeated_status_messages() -> None:
    first = read_reports([status(GW, [ACTIVATED])], set())
    again = read_reports([status(GW, [ACTIVATED, REFUSED])], first.seen)
    assert [e.action for e in first.events] == ["edge.release.activated"]
    assert [e.action for e in again.events] == ["edge.release.refused"]
    assert again.events[0].reason == "bad sig" and again.events[0].actor == GW
    assert first.running == {GW: {"model": 3, "config": 0}}


def test_messages_that_are_not_status_reports_are_ignored() -> None:
    lines = ["not json", "[]", status(GW, [ACTIVATED], kind="telemetry"), "", "{" * 10]
    assert read_reports(lines, set()).events == []


def test_a_gateway_flooding_its_status_cannot_get_the_others_results_recorded_twice() -> None:
    """A gateway in an attacker's hands sends status messages full of made-up results: at most
    a few are recorded per message, what is remembered about it stays bounded, and another
    gateway's result, remembered before the flood, is not recorded a second time."""
    from release.reports import MAX_RESULTS_PER_MESSAGE, SEEN_PER_DEVICE

    other = "acme/plant1/press/line1/cell1/gw-0"
    before = read_reports([status(other, [ACTIVATED])], [])
    flood = [
        status(GW, [{**ACTIVATED, "at": float(m * 1000 + i)} for i in range(500)])
        for m in range(300)
    ]
    after = read_reports(flood, before.seen)
    assert len(after.events) <= 300 * MAX_RESULTS_PER_MESSAGE
    assert sum(k.startswith(GW + "|") for k in after.seen) <= SEEN_PER_DEVICE
    again = read_reports([status(other, [ACTIVATED])], after.seen)
    assert again.events == []
