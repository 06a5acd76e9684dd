"""Outbox rules: durable, bounded, explicit about every message it drops."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import ConfigError, OutboxFullError, OutboxStorageError
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


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_outbox_side_files_are_not_readable_by_other_local_users(tmp_path: Path) -> None:
    """Messages sit in the -wal file until a checkpoint: it is as private as the database."""
    state = tmp_path / "edge-state"
    with _umask(0):  # the loosest umask a gateway could be started with
        box = Outbox.open(state / "outbox.db", OutboxLimits())
        box.append(T, b'{"secret": 1}', now=1000.0)
        files = [state / "outbox.db", state / "outbox.db-wal", state / "outbox.db-shm"]
        assert all(f.exists() for f in files)
        assert [_mode(f) for f in files] == [0o600, 0o600, 0o600]
        assert _mode(state) == 0o700
        box.close()


def test_side_files_left_readable_by_an_older_version_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with _umask(0o022):  # what the old code left: side files 0644 while a connection is open
        old = sqlite3.connect(path)
        old.execute("PRAGMA journal_mode=WAL")
        old.execute("CREATE TABLE t(x)")
    wal, shm = tmp_path / "o.db-wal", tmp_path / "o.db-shm"
    assert _mode(wal) == 0o644
    box = Outbox.open(path, OutboxLimits())
    assert [_mode(path), _mode(wal), _mode(shm)] == [0o600, 0o600, 0o600]
    box.close()
    old.close()


def test_symlinked_wal_file_is_refused(tmp_path: Path) -> None:
    readable = tmp_path / "readable-by-all"
    readable.write_bytes(b"")
    readable.chmod(0o644)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "o.db-wal").symlink_to(readable)
    with pytest.raises(OutboxStorageError):
        Outbox.open(tmp_path / "state" / "o.db", OutboxLimits())
    assert readable.read_bytes() == b"" and _mode(readable) == 0o644


def test_outbox_directory_open_to_others_is_made_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    Outbox.open(state / "o.db", OutboxLimits()).close()
    assert _mode(state) == 0o700


def test_outbox_in_a_shared_sticky_directory_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: chmod-ing it would break everyone else
    with pytest.raises(ConfigError, match="own"):
        Outbox.open(shared / "o.db", OutboxLimits())
    assert _mode(shared) == 0o1777 and not (shared / "o.db").exists()
