"""The shared message-id window: batch lookups, and workers opening a fresh window together."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from relay.dedup import DedupWindow, lookup_sql


def test_seen_many_returns_exactly_the_remembered_pairs(tmp_path: Path) -> None:
    window = DedupWindow(tmp_path / "d.sqlite", window_s=3600, max_ids=100_000)
    window.remember([(f"acme/p/a/l/c/gw-{i % 7}", f"id-{i}") for i in range(1000)], now=1.0)
    asked = [(f"acme/p/a/l/c/gw-{i % 7}", f"id-{i}") for i in range(900, 1900)]
    asked += [("acme/p/a/l/c/gw-0", "id-1")]  # the id is known, but for another device
    found = window.seen_many(asked)
    window.close()
    assert found == {(f"acme/p/a/l/c/gw-{i % 7}", f"id-{i}") for i in range(900, 1000)}


def test_the_batch_lookup_probes_the_primary_key_instead_of_scanning(tmp_path: Path) -> None:
    window = DedupWindow(tmp_path / "d.sqlite", window_s=3600, max_ids=100_000)
    plan = window._db.execute("EXPLAIN QUERY PLAN " + lookup_sql(3), ["d", "m"] * 3).fetchall()
    window.close()
    details = [row[3] for row in plan]
    assert "SEARCH seen USING PRIMARY KEY (device=? AND msg_id=?)" in details, details
    assert "SCAN seen" not in details, details


def _open(path: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        DedupWindow(Path(path), window_s=60, max_ids=10).close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_workers_opening_a_fresh_window_at_once_all_succeed(tmp_path: Path) -> None:
    """Two workers starting together used to fail with "database is locked" (~1 in 10 opens)
    while one switched the new file to WAL; the supervisor then restarted the worker."""
    ctx = mp.get_context("fork")
    failures: list[str] = []
    for round_ in range(25):
        path = tmp_path / f"dedup-{round_}.sqlite"
        results, start = ctx.Queue(), ctx.Barrier(4)
        procs = [ctx.Process(target=_open, args=(str(path), start, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        failures += [r for r in (results.get(timeout=10) for _ in procs) if r != "ok"]
    assert failures == []
