"""The plant-wide power-up half of bench/enroll.py: thousands of gateways enrolling at once.

Each gateway opens its own TLS connection (a full handshake: a gateway that just powered up has
no session to resume) and posts its enrollment; a 429 or 503 is retried after the
``Retry-After`` the service gave, with the jitter of `provisioning.patience.Patience` (what
``idmz enroll`` does), a refused or lost connection after its back-off. A gateway keeps its
connection while it waits less than the service's keep-alive, else reconnects. This client is
asyncio on raw streams so that 5,000 of them cost the machine little next to the service;
tests/provisioning/test_power_up.py runs the real client (httpx) with fewer gateways.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from provisioning.patience import Patience

_KEEP_WHILE_WAITING_S = 20.0  # the service closes idle keep-alive connections after 30 s
# TLS handshakes this one event loop has under way at once: all 5,000 at once would queue their
# completions behind each other here for longer than the service's 10 s header deadline (a
# load-generator artefact: in a plant every gateway is its own machine).
_HANDSHAKES = 128


@dataclass
class PowerUp:
    gateways: int
    seconds: float = 0.0
    enrolled: int = 0
    gave_up: int = 0
    retries: int = 0
    max_retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, 201s included
    connection_errors: int = 0

    @property
    def five_xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# bench/enroll.py's HTTP/1.1 request on a connection: (status, body, headers)
Request = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter, bytes, bytes],
    Awaitable[tuple[int, bytes, dict[bytes, bytes]]],
]


async def power_up(
    port: int,
    root: str,
    tokens: list[str],
    csrs: list[bytes],
    request: Request,
    *,
    patience: Patience,
) -> PowerUp:
    ctx = ssl.create_default_context(cafile=root)
    result = PowerUp(len(tokens))
    handshakes = asyncio.Semaphore(_HANDSHAKES)

    async def gateway(i: int) -> None:
        head = (
            b"POST /v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + tokens[i].encode() + b"\r\n"
        )
        body = json.dumps({"csr": csrs[i].decode()}).encode()
        deadline = time.monotonic() + patience.total_s
        streams: Streams | None = None
        attempt = 0
        try:
            while True:
                hint: str | None = None
                try:
                    if streams is None:
                        async with handshakes:
                            streams = await asyncio.open_connection(
                                "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
                            )
                    status, _, headers = await request(*streams, head, body)
                except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                    result.connection_errors += 1
                    streams = _close(streams)
                else:
                    result.statuses[status] += 1
                    if status == 201:
                        result.enrolled += 1
                        return
                    if status not in (429, 503):
                        result.gave_up += 1
                        return
                    hint = headers.get(b"retry-after", b"").decode() or None
                    if headers.get(b"connection", b"").lower() == b"close":
                        streams = _close(streams)
                attempt += 1
                delay = patience.delay_s(hint, attempt)
                if time.monotonic() + delay > deadline:
                    result.gave_up += 1
                    return
                result.retries += 1
                result.max_retries = max(result.max_retries, attempt)
                if delay > _KEEP_WHILE_WAITING_S:
                    streams = _close(streams)
                await asyncio.sleep(delay)
        finally:
            _close(streams)

    start = time.perf_counter()
    await asyncio.gather(*(gateway(i) for i in range(len(tokens))))
    result.seconds = time.perf_counter() - start
    return result


def _close(streams: Streams | None) -> None:
    if streams is not None:
        streams[1].close()
