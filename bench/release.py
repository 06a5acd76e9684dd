"""Releases: publish to N gateways, and what a gateway's update check costs when nothing changed.

One process: the release repository served over real HTTPS with mutual TLS on loopback
(`release.server`), N simulated gateways (a real `edge.gateway.Gateway` each, with the real TUF
client `edge.updates` and `edge.activation`), each with its own device certificate.

1. publish -> all N running it: the time from `ReleaseRepository.publish` (a model, stage all)
   until every gateway has checked, downloaded, verified (TUF + the model's bundle), self-tested
   and swapped its scorer; gateways check concurrently (``--threads``), as a fleet whose
   schedules happen to line up (in the field the interval and jitter add to this).
2. CPU per check when nothing changed, on the checking thread (``time.thread_time``: the server's
   threads are not counted), against the reference in the same run: a plain HTTPS GET of
   ``timestamp.json`` over the same kept-alive mTLS connection.

    .venv/bin/python bench/release.py [--gateways 20] [--threads 4] [--checks 50]

Last line: RESULT release publish_to_all_s=<v> gateways=<n> check_cpu_ms=<v> get_cpu_ms=<v> ratio=<v>
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

# The repository first: this file's own directory would otherwise answer `import release`.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.edge.harness import train_simulator_model  # noqa: E402
from tests.support.ca import make_ca  # noqa: E402
from tests.support.release_fleet import FleetGateway, start_fleet  # noqa: E402

LINE = "acme/plant1/press/line1"


def cpu_ms(fn: object, n: int) -> float:
    """Median thread CPU time of ``fn()`` over ``n`` calls, in ms."""
    samples = []
    for _ in range(n):
        t0 = time.thread_time()
        fn()  # type: ignore[operator]
        samples.append((time.thread_time() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--checks", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ca = make_ca(root / "ca", age=timedelta(days=365))
        ids = [f"{LINE}/cell{i % 4}/gw-{i:03d}" for i in range(args.gateways)]
        fleet = start_fleet(ca, root / "fleet", ids)
        try:
            m1, m2 = train_simulator_model("bench-1"), train_simulator_model("bench-2")
            fleet.publish_model(m1, LINE)
            gws = list(fleet.gateways.values())

            def check(g: FleetGateway) -> None:
                g.check()

            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(check, gws))  # warm: everyone runs bench-1, connections open
                t0 = time.perf_counter()
                fleet.publish_model(m2, LINE)
                list(pool.map(check, gws))
                publish_to_all = time.perf_counter() - t0
            running = sum(g.model_version == "bench-2" for g in gws)
            if running != len(gws):
                raise SystemExit(f"only {running} of {len(gws)} gateways run bench-2")
            g = gws[0]
            client = g.agent.client.fetcher.client()
            url = f"{fleet.url}/metadata/timestamp.json"
            check_ms = cpu_ms(g.check, args.checks)
            get_ms = cpu_ms(lambda: client.get(url).raise_for_status(), args.checks)
        finally:
            fleet.stop()
    load = os.getloadavg()[0]
    print(f"publish -> {args.gateways} gateways running it: {publish_to_all:.2f} s "
          f"({args.threads} checking at once); load average {load:.2f}")  # fmt: skip
    print(f"update check, nothing changed: {check_ms:.2f} ms CPU; plain GET of timestamp.json "
          f"{get_ms:.2f} ms CPU")  # fmt: skip
    print(
        f"RESULT release publish_to_all_s={publish_to_all:.3f} gateways={args.gateways} "
        f"check_cpu_ms={check_ms:.3f} get_cpu_ms={get_ms:.3f} ratio={check_ms / get_ms:.1f}"
    )


if __name__ == "__main__":
    main()
