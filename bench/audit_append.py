"""Durable audit appends with group commit vs raw write+fsync per event, and full-log verify.

Both sides write the same entry bytes with the same number of concurrent writer threads to
the same filesystem, in interleaved 1-second rounds (the disk is shared and noisy); every
counted append is fsynced before it counts. The reference keeps file order (one lock around
write+fsync), as any log that numbers its entries must; the unordered variant (threads
racing, ext4 merging their fsyncs) is printed too, see ADR 0021. Then a 1,000,000-entry log
is built (bulk path, few fsyncs) and `verify_log` is timed.

    .venv/bin/python bench/audit_append.py [--threads 8] [--seconds 5] [--verify-entries N]

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


class AuditLogSide:
    """Durable appends through AuditLog (group commit), 8 threads by default."""

    def __init__(self, directory: Path) -> None:
        self.log = AuditLog.open(directory, origin=ORIGIN, limits=AuditLimits(**NO_THRESHOLDS))

    def run(self, threads: int, seconds: float) -> tuple[int, float]:
        log = self.log

        def work(stop: threading.Event) -> int:
            n = 0
            while not stop.is_set():
                log.record(event(n))
                n += 1
            return n

        start = time.perf_counter()
        total = run_threads(threads, seconds, work)
        return total, time.perf_counter() - start


class RawSide:
    """Raw write+fsync per event. ``ordered``: each write+fsync under one lock, as a log that
    assigns sequence numbers in file order must do without group commit (the reference).
    Unordered: threads race, and ext4's journal merges their concurrent fsyncs (kernel-level
    group commit, no defined order); printed for context."""

    # The same bytes an entry occupies on disk.
    LINE = canonical_json({"seq": 0, "time": "2026-11-22T00:00:00.000000Z", "host": "bench",
                           "time_source": "system", "v": 1, "actor": DEVICE,
                           "action": "relay.message.refused", "resource": f"{DEVICE}/telemetry",
                           "outcome": "denied", "reason": "payload larger than max_message_bytes",
                           "before": None, "after": None, "zone": "idmz",
                           "details": {"n": 0}}) + b"\n"  # fmt: skip

    def __init__(self, path: Path, *, ordered: bool) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.lock: contextlib.AbstractContextManager[object] = (
            threading.Lock() if ordered else contextlib.nullcontext()
        )

    def run(self, threads: int, seconds: float) -> tuple[int, float]:
        fd, line, lock = self.fd, self.LINE, self.lock

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
        return total, time.perf_counter() - start


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


def scratch_parent() -> str:
    """The temp dir, unless it is a tmpfs (where fsync is free): then the working dir."""
    tmp = os.path.realpath(tempfile.gettempdir())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return tmp
    best = max(
        (line.split() for line in mounts if len(line.split()) > 2),
        key=lambda f: len(f[1]) if tmp == f[1] or tmp.startswith(f[1].rstrip("/") + "/") else -1,
    )
    return os.getcwd() if best[2] in ("tmpfs", "ramfs") else tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="rounds of 1 s per side")
    parser.add_argument("--verify-entries", type=int, default=1_000_000)
    parser.add_argument("--dir", help="scratch directory on the disk to measure (not tmpfs)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="audit-bench-", dir=args.dir or scratch_parent()))
    try:
        # Interleave 1-second slices so both sides see the same (shared, noisy) disk.
        log_side = AuditLogSide(scratch / "log")
        sides: dict[str, AuditLogSide | RawSide] = {
            "raw_ordered": RawSide(scratch / "raw.jsonl", ordered=True),
            "audit_log": log_side,
            "raw_unordered": RawSide(scratch / "race.jsonl", ordered=False),
        }
        totals = {name: [0, 0.0] for name in sides}
        for _ in range(max(1, round(args.seconds))):
            for name, side in sides.items():
                count, elapsed = side.run(args.threads, 1.0)
                totals[name][0] += count
                totals[name][1] += elapsed
        rate = {name: count / elapsed for name, (count, elapsed) in totals.items()}
        stats = log_side.log.stats
        log_side.log.close()
        print(f"{args.threads} writer threads, {round(args.seconds)} interleaved 1 s rounds each")
        print(f"audit log (group commit): {rate['audit_log']:.0f} durable appends/s, "
              f"{stats.entries / max(stats.flushes, 1):.1f} entries per fdatasync")  # fmt: skip
        print(f"raw write+fsync per event, in order (one lock): {rate['raw_ordered']:.0f}/s")
        print(f"raw write+fsync per event, threads racing (no order): {rate['raw_unordered']:.0f}/s"
              f" -> audit log / racing = {rate['audit_log'] / rate['raw_unordered']:.2f}")  # fmt: skip
        verify_s = bench_verify(scratch / "big", args.verify_entries)
        print(f"verify of a {args.verify_entries}-entry log took {verify_s:.2f} s")
        print(
            f"RESULT audit_append appends_per_s={rate['audit_log']:.0f} "
            f"raw_fsync_per_s={rate['raw_ordered']:.0f} verify_1m_s={verify_s:.2f} "
            f"ratio={rate['audit_log'] / rate['raw_ordered']:.2f}"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
