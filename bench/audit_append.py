"""Durable audit appends with group commit vs raw write+fsync per event, and full-log verify.

Both sides write the same entry bytes with the same number of concurrent writer threads to
the same filesystem, each for the same wall time; every counted append is fsynced before it
counts. The reference keeps file order (one lock around write+fsync), as any log that numbers
its entries must; the unordered variant is printed too (see ADR 0021). Then a 1,000,000-entry log is built (bulk path, few fsyncs) and `verify_log` is timed.

    .venv/bin/python bench/audit_append.py [--threads 8] [--seconds 4] [--verify-entries N]

Last line: RESULT audit_append appends_per_s=<v> raw_fsync_per_s=<v> verify_1m_s=<v> ratio=<v>
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from audit.entry import canonical_json
from audit.events import AuditEvent, Outcome
from audit.keys import read_vkey
from audit.limits import AuditLimits
from audit.log import AuditLog
from audit.verify import verify_log

ORIGIN = "bench.example/idmz-audit"
DEVICE = "acme/plant1/press/line1/cell2/press-07"
NO_THRESHOLDS = {"space_left_bytes": 0, "admin_space_left_bytes": 0}


def event(n: int) -> AuditEvent:
    return AuditEvent(
        DEVICE, "relay.message.refused", f"{DEVICE}/telemetry", Outcome.DENIED,
        "payload larger than max_message_bytes", details={"n": n},
    )  # fmt: skip


def run_threads(threads: int, seconds: float, work: object) -> int:
    """Run ``work(stop_event) -> count`` on ``threads`` threads for ``seconds``."""
    counts = [0] * threads
    stop = threading.Event()

    def body(i: int) -> None:
        counts[i] = work(stop)  # type: ignore[operator]

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(counts)


def bench_audit_log(directory: Path, threads: int, seconds: float) -> float:
    log = AuditLog.open(directory, origin=ORIGIN, limits=AuditLimits(**NO_THRESHOLDS))

    def work(stop: threading.Event) -> int:
        n = 0
        while not stop.is_set():
            log.record(event(n))
            n += 1
        return n

    start = time.perf_counter()
    total = run_threads(threads, seconds, work)
    elapsed = time.perf_counter() - start
    stats = log.stats
    log.close()
    print(f"audit log: {total} durable appends in {elapsed:.2f} s, "
          f"{stats.batches} fsync batches ({total / max(stats.batches, 1):.1f} entries each)")  # fmt: skip
    return total / elapsed


def bench_raw_fsync(path: Path, threads: int, seconds: float, *, ordered: bool) -> float:
    """Raw write+fsync per event. ``ordered``: each write+fsync under one lock, as a log
    that assigns sequence numbers in file order must do without group commit (the
    reference). Unordered: threads race, and ext4's journal merges their concurrent fsyncs
    (kernel-level group commit, no defined order); printed for context."""
    # The same bytes an entry occupies on disk, appended and fsynced one event at a time.
    line = canonical_json({"seq": 0, "time": "2026-11-22T00:00:00.000000Z", "host": "bench",
                           "time_source": "system", "v": 1, "actor": DEVICE,
                           "action": "relay.message.refused", "resource": f"{DEVICE}/telemetry",
                           "outcome": "denied", "reason": "payload larger than max_message_bytes",
                           "before": None, "after": None, "zone": "idmz",
                           "details": {"n": 0}}) + b"\n"  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lock = threading.Lock() if ordered else contextlib.nullcontext()

    def work(stop: threading.Event) -> int:
        n = 0
        while not stop.is_set():
            with lock:
                os.write(fd, line)
                os.fsync(fd)
            n += 1
        return n

    start = time.perf_counter()
    total = run_threads(threads, seconds, work)
    elapsed = time.perf_counter() - start
    os.close(fd)
    kind = "ordered (one lock)" if ordered else "unordered (threads race)"
    print(f"raw write+fsync per event, {kind}: {total} appends in {elapsed:.2f} s")
    return total / elapsed


def bench_verify(directory: Path, entries: int) -> float:
    limits = AuditLimits(max_batch_entries=50_000, **NO_THRESHOLDS)
    start = time.perf_counter()
    with AuditLog.open(directory, origin=ORIGIN, limits=limits) as log:
        for first in range(0, entries, 50_000):
            log.record_batch([event(n) for n in range(first, min(entries, first + 50_000))])
    print(f"built a {entries}-entry log in {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    result = verify_log(directory, read_vkey(directory / "checkpoint.vkey"))
    elapsed = time.perf_counter() - start
    assert result.size == entries
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--dir", help="scratch directory on the disk to measure (not tmpfs)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.dir or "bench"))
    try:
        raw = bench_raw_fsync(scratch / "raw.jsonl", args.threads, args.seconds, ordered=True)
        ours = bench_audit_log(scratch / "log", args.threads, args.seconds)
        racing = bench_raw_fsync(scratch / "race.jsonl", args.threads, args.seconds, ordered=False)
        print(f"for context: audit log / unordered raw fsync = {ours / racing:.2f}")
        verify_s = bench_verify(scratch / "big", args.verify_entries)
        print(f"verify of a {args.verify_entries}-entry log took {verify_s:.2f} s")
        print(
            f"RESULT audit_append appends_per_s={ours:.0f} raw_fsync_per_s={raw:.0f} "
            f"verify_1m_s={verify_s:.2f} ratio={ours / raw:.2f}"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
