"""The two halves of load shedding (ADR 0137) on their own: the service's gate hands out
appointments that spread a herd over the time it needs, and the client keeps them within a
bounded total time (against a real HTTP server that is always busy)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from provisioning.errors import RateLimitedError, UpstreamError
from provisioning.patience import Patience, Retry, request_patiently
from provisioning.shedding import EnrollmentGate


def refusals(gate: EnrollmentGate, count: int, *, now_s: float) -> list[int]:
    waits = []
    for _ in range(count):
        with pytest.raises(RateLimitedError) as refused:
            gate.enter(now_s=now_s)
        waits.append(refused.value.retry_after_s)
    return waits


def test_a_herd_refused_at_once_gets_appointments_spread_over_the_time_it_needs() -> None:
    gate = EnrollmentGate(max_in_flight=10, initial_rate_per_s=100.0)
    for _ in range(10):
        gate.enter(now_s=0.0)
    waits = refusals(gate, 1000, now_s=0.0)
    assert waits == sorted(waits)  # first come, first served
    assert waits[0] == 1 and waits[-1] == 11  # 10 inside + 1,000 outside at 100/s: ~10.1 s
    assert gate.shed == 1000 and gate.in_flight == 10


def test_appointments_follow_the_measured_rate_and_are_capped() -> None:
    gate = EnrollmentGate(
        max_in_flight=2, initial_rate_per_s=100.0, min_rate_per_s=1.0, max_retry_after_s=30
    )
    gate.enter(now_s=0.0)  # one request stays inside: the gate is busy throughout
    t = 0.0
    for _ in range(60):  # 60 completions in 12 s: 5/s measured, six windows
        gate.enter(now_s=t)
        t += 0.2
        gate.leave(now_s=t)
    gate.enter(now_s=t)
    waits = refusals(gate, 300, now_s=t)
    assert waits[10] == 2  # ~8/s estimated (converging on 5): ~1.5 s, not 0.1 s as at 100/s
    assert max(waits) == 30


class _AlwaysBusy(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(429)
        self.send_header("Retry-After", "7")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def busy_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysBusy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/enroll"
    finally:
        server.shutdown()


def test_client_waits_as_told_with_jitter_and_gives_up_after_its_total_time(busy_url: str) -> None:
    clock = [0.0]
    waits: list[Retry] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    patience = Patience(total_s=60, on_retry=waits.append, sleep=sleep, monotonic=lambda: clock[0])
    with httpx.Client() as http, pytest.raises(UpstreamError, match="answered 429; gave up"):
        request_patiently(http, "POST", busy_url, patience, json={})
    assert waits and all(7.0 <= w.delay_s <= 10.5 and w.status == 429 for w in waits)
    assert len({round(w.delay_s, 6) for w in waits}) == len(waits)  # jittered, not in lockstep
    assert clock[0] <= 60  # never slept past the bound


def test_client_does_not_retry_an_answer_that_is_not_busy(busy_url: str) -> None:
    waits: list[Retry] = []
    patience = Patience(on_retry=waits.append, sleep=lambda _: None)
    with httpx.Client() as http:
        response = request_patiently(http, "GET", busy_url, patience)  # 501: GET unsupported
    assert response.status_code == 501 and waits == []
