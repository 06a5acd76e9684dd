"""CPU per enrollment in one process, through what ``idmz provisioning serve`` runs
(`provisioning.http.app.wrap`: ``POST /v1/enroll`` below FastAPI, ADR 0140) and through the same
FastAPI route behind only the body limit (the route before ADR 0140), alternating on one runtime.

Each enrollment is complete (token, CSR, registry, CA, durable audit), 16 at once, sent as ASGI
messages: no TLS, no sockets and no load generator in the measure, so the difference is the HTTP
layer's. The CPU is this process's (every thread: the event loop, the thread pool, the
committer). It still moves with the neighbours (run against the code before ADR 0140, where both
sides are the FastAPI route, it differed by up to 25 % between rounds at load average 4.7), so
the two sides alternate and the first one changes each round; compare several runs.

    .venv/bin/python bench/enroll_route.py [--devices 1000] [--rounds 3]

Last line: RESULT enroll_route fastapi_cpu_ms=<v> below_cpu_ms=<v> ratio=<v> rounds=<n> load1=<v>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from enroll import prepare  # bench/ is this script's sys.path[0]

from idmz.home import Home
from idmz.provisioning_runtime import open_runtime
from provisioning.bodylimit import BodyLimit
from provisioning.config import RateLimits, ServiceLimits
from provisioning.http.app import create_app, wrap


async def enroll_all(app: Any, tokens: list[str], csrs: list[bytes]) -> float:
    """Process CPU seconds to enroll every token through ``app``, 16 requests at once."""
    gate = asyncio.Semaphore(16)
    statuses: list[int] = []

    async def one(token: str, csr: bytes) -> None:
        body = json.dumps({"csr": csr.decode()}).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https",
            "path": "/v1/enroll",
            "raw_path": b"/v1/enroll",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"localhost"),
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {token}".encode()),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8443),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async with gate:
            await app(scope, receive, send)

    started = time.process_time()
    await asyncio.gather(*(one(t, c) for t, c in zip(tokens, csrs, strict=True)))
    cpu = time.process_time() - started
    if statuses != [201] * len(tokens):
        raise SystemExit(f"not every enrollment succeeded: {sorted(set(statuses))}")
    return cpu


def now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000, help="per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="idmz-bench-route-"))
    _, tokens, csrs, _ = prepare(home, args.devices * 2 * args.rounds)
    # The client's address is the same for all; the rate limits are not what is measured.
    rates = RateLimits(
        per_client_per_s=1e6, per_client_burst=10**6, per_token_per_s=1e6, per_token_burst=10**6
    )
    limits = ServiceLimits(rates=rates)
    load = os.getloadavg()
    with open_runtime(Home(home), organization="bench", limits=limits) as runtime:
        below = wrap(create_app(runtime.services, clock=now, limits=limits), limits)
        fastapi = BodyLimit(
            create_app(runtime.services, clock=now, limits=limits), limits.http.max_body_bytes
        )
        totals = {"fastapi": 0.0, "below": 0.0}
        n = args.devices
        for r in range(args.rounds):
            # alternate which side goes first: the registry grows as the run goes on
            order = [("fastapi", fastapi), ("below", below)][:: 1 if r % 2 == 0 else -1]
            for i, (name, app) in enumerate(order):
                at = (2 * r + i) * n
                cpu = asyncio.run(enroll_all(app, tokens[at : at + n], csrs[at : at + n]))
                totals[name] += cpu
                print(f"round {r + 1} {name}: {cpu / n * 1000:.3f} ms of CPU per enrollment")
    done = args.devices * args.rounds
    fastapi_ms, below_ms = totals["fastapi"] / done * 1000, totals["below"] / done * 1000
    print(
        f"RESULT enroll_route fastapi_cpu_ms={fastapi_ms:.3f} below_cpu_ms={below_ms:.3f} "
        f"ratio={below_ms / fastapi_ms:.3f} rounds={args.rounds} load1={load[0]:.2f}"
    )


if __name__ == "__main__":
    main()
