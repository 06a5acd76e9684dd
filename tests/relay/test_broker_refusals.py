"""The plugin's report lines (relay.broker_refusals): only an exact v1 line with a checked
identity becomes a refusal; client-chosen text can never add a field, a line or an actor."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.broker_refusals import BrokerRefusal, RefusalTail, broker_refusal_event, parse_refusal
from tests.support.net import wait_for

P2 = "acme/plant1/stamping/line1/cell1/press-02"


def test_an_escaped_line_is_read_back_exactly() -> None:
    line = f"v1 acl_denied write 7 1 {P2} gw%202 {P2}/it%27s%20x".encode()
    assert parse_refusal(line) == BrokerRefusal(
        "acl_denied", "write", 7, P2, "gw 2", f"{P2}/it's x", topic_truncated=True
    )
    event = broker_refusal_event("ot", parse_refusal(line))  # type: ignore[arg-type]
    assert (event.actor, event.action, event.resource) == (
        P2,
        "relay.message.refused",
        f"{P2}/it's x",
    )
    assert event.details["count"] == 7 and event.details["code"] == "broker_acl_denied"


@pytest.mark.parametrize(
    "line",
    [
        f"v1 acl_denied write 1 0 {P2} a b c".encode(),  # an extra field
        f"v1 acl_denied write 1 0 {P2} a".encode(),  # a missing one
        f"v2 acl_denied write 1 0 {P2} a b".encode(),
        f"v1 forged write 1 0 {P2} a b".encode(),
        f"v1 acl_denied write 0 0 {P2} a b".encode(),  # a count of nothing
        f"v1 acl_denied write 1 0 {P2} a%2 b".encode(),  # a broken escape
        f"v1 acl_denied write 1 0 {P2} a'b b".encode(),  # a byte the plugin always escapes
        b"v1 acl_denied write 1 0 not%20an%20identity a b",
        b"v1 acl_denied write 1 0 ~ a b",  # no identity, yet not an identity refusal
        f"v1 acl_denied write 1 0 {P2} a {'x' * 9000}".encode(),
        f"v1 rate_limited read 1 0 {P2} a b".encode(),  # the plugin caps publishes only
        f"v1 rate_limited write 99999999999999 0 {P2} a b".encode(),  # past its saturation
    ],
)
def test_anything_but_an_exact_line_is_refused(line: bytes) -> None:
    assert parse_refusal(line) is None


def test_a_capped_flood_is_one_record_with_its_count_and_a_reason_saying_so() -> None:
    # ADR 0141: the plugin's rate cap reports its refusals aggregated, like ACL denials.
    line = f"v1 rate_limited write 999999999999 0 {P2} {P2} {P2}/telemetry".encode()
    refusal = parse_refusal(line)
    assert refusal is not None and refusal.count == 999_999_999_999  # the plugin's saturation
    event = broker_refusal_event("ot", refusal)
    assert (event.actor, event.action, event.resource) == (
        P2,
        "relay.message.refused",
        f"{P2}/telemetry",
    )
    assert event.details["code"] == "broker_rate_limited"
    assert "max_messages_per_s" in event.reason


def test_the_tail_reads_appended_lines_and_skips_overlong_ones(tmp_path: Path) -> None:
    path = tmp_path / "ot-refusals.log"
    path.write_bytes(f"v1 acl_denied write 1 0 {P2} old {P2}/old\n".encode())  # before start
    got: list[BrokerRefusal] = []
    tail = RefusalTail(path, got.append, poll_interval_s=0.02)
    tail.start()
    try:
        with path.open("ab") as fh:
            fh.write(b"y" * (2 << 20) + b"\n")  # over-long, read in pieces: skipped whole
            fh.write(f"v1 acl_denied read 2 0 {P2} new {P2}/new\n".encode())
        wait_for(lambda: got, timeout_s=30, what="the new line")
    finally:
        tail.stop()
    assert [(r.topic, r.count, r.access) for r in got] == [(f"{P2}/new", 2, "read")]
    assert tail.malformed >= 1
