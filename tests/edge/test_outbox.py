"""Outbox rules: durable, bounded, explicit about every message it drops."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import ConfigError, OutboxFullError
from edge.outbox import Outbox, OutboxLimits

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
T = "acme/plant1/press/line1/cell2/gw-01/telemetry"


def small(overflow: str = "drop-oldest") -> OutboxLimits:
    return OutboxLimits(max_outbox_bytes=1000, max_message_bytes=200, ttl_s=60, overflow=overflow)


def test_messages_get_a_stable_uuid7_id_when_they_enter(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", OutboxLimits())
    m = box.append(T, b"{}", now=1000.0)
    assert UUID7.fullmatch(m.id)
    box.close()
    again = Outbox.open(tmp_path / "o.db", OutboxLimits())
    assert [x.id for x in again.next_batch(after_seq=0, limit=5)] == [m.id]


def test_only_acknowledged_messages_leave_the_outbox(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", OutboxLimits())
    msgs = [box.append(T, f"{i}".encode(), now=1000.0 + i) for i in range(5)]
    assert box.ack([msgs[1].id, msgs[3].id, "not-an-id"]) == 2
    assert [m.payload for m in box.next_batch(after_seq=0, limit=10)] == [b"0", b"2", b"4"]
    s = box.stats(now=1010.0)
    assert (s.depth, s.acked, s.appended, s.oldest_age_s) == (3, 2, 5, 10.0)


def test_drop_oldest_evicts_in_order_and_counts_every_drop(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", small())
    for i in range(30):
        box.append("t", bytes([65 + i % 26]) * 99, now=1000.0 + i)  # 100 bytes with topic
    s = box.stats(now=1030.0)
    assert s.bytes <= 1000 and s.depth == 10
    assert s.dropped["overflow"] == 20
    kept = box.next_batch(after_seq=0, limit=100)
    assert [m.created_at for m in kept] == [1000.0 + i for i in range(20, 30)]


def test_refuse_new_keeps_the_old_data_and_counts_refusals(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", small("refuse-new"))
    for i in range(10):
        box.append("t", b"x" * 99, now=1000.0 + i)
    with pytest.raises(OutboxFullError, match="refuse-new"):
        box.append("t", b"y" * 99, now=2000.0)
    s = box.stats(now=2000.0)
    assert (s.depth, s.dropped["refused"], s.dropped["overflow"]) == (10, 1, 0)


def test_undelivered_messages_expire_after_the_ttl_and_are_counted(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", small())
    box.append("t", b"old", now=1000.0)
    box.append("t", b"new", now=1050.0)
    assert box.expire(now=1070.0) == 1
    assert [m.payload for m in box.next_batch(after_seq=0, limit=5)] == [b"new"]
    assert box.stats(now=1070.0).dropped["expired"] == 1


def test_an_oversized_message_is_refused_whatever_the_policy(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "o.db", small())
    with pytest.raises(OutboxFullError, match="max_message_bytes"):
        box.append("t", b"x" * 500, now=1.0)
    assert box.stats(now=1.0).depth == 0


def test_unknown_overflow_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="overflow"):
        OutboxLimits(overflow="drop-newest")


CHILD = """
import sys, time
from pathlib import Path
from edge.outbox import Outbox, OutboxLimits
box = Outbox.open(Path(sys.argv[1]), OutboxLimits())
i = 0
while True:
    m = box.append("t", b"payload-%d" % i, now=time.time())
    print(m.id, flush=True)   # acknowledged to the caller only after the commit
    i += 1
"""


def test_every_append_acknowledged_before_a_kill_9_survives_it(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    acknowledged = [proc.stdout.readline().decode().strip() for _ in range(200)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    box = Outbox.open(db, OutboxLimits())
    stored = {m.id for m in box.next_batch(after_seq=0, limit=1_000_000)}
    assert set(acknowledged) <= stored
    assert box.stats(now=0.0).depth == len(stored)


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["append", "ack", "expire"]), st.integers(1, 180)),
        min_size=1,
        max_size=40,
    )
)
def test_depth_and_bytes_always_match_what_is_stored(ops: list[tuple[str, int]]) -> None:
    """The outbox keeps its depth and byte counts incrementally (no table scans); whatever
    happens, they equal a recount and stay under the cap, and every message is accounted for
    as stored, acknowledged or dropped for a counted reason."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        box = Outbox.open(Path(d) / "o.db", small())
        now = 1000.0
        for op, n in ops:
            now += 5
            if op == "append":
                with contextlib.suppress(OutboxFullError):
                    box.append("t", b"x" * n, now=now)
            elif op == "ack":
                stored = box.next_batch(after_seq=0, limit=n % 5 + 1)
                box.ack([m.id for m in stored])
            else:
                box.expire(now=now)
            s = box.stats(now=now)
            rows = box.next_batch(after_seq=0, limit=10_000)
            assert s.depth == len(rows)
            assert s.bytes == sum(len(m.payload) + len(m.topic) for m in rows) <= 1000
            dropped = s.dropped["overflow"] + s.dropped["expired"]
            assert s.appended == s.depth + s.acked + dropped
        box.close()
