"""The provisioning service's HTTP layer against hostile clients on raw TLS sockets, before
any route runs: header floods (431), slow clients (408), too many connections (429 + Retry-After). The real
service (uvicorn + `PeerCertProtocol` over TLS); after each refusal nothing was issued and
honest clients are still served."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.config import HttpLimits, RateLimits, ServiceLimits
from tests.provisioning.conftest import Env, csr_for, new_key, serving
from tests.support.net import (
    dribble_until_closed,
    http_status,
    peak_rss_bytes,
    read_until_closed,
    stream_until_cut,
    wait_for,
)

MiB = 1024 * 1024
MAX_HEADER_BYTES = HttpLimits().max_header_bytes


def tls(env: Env) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(env.root_file))
    raw = socket.create_connection(("127.0.0.1", env.port), timeout=30)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def healthy(env: Env) -> bool:
    with env.client() as http:
        return http.get("/healthz").status_code == 200


def served_with(tmp_path: Path, **http: float) -> Iterator[Env]:
    rates = RateLimits(per_client_per_s=1000, per_client_burst=1000)
    limits = ServiceLimits(rates=rates, http=HttpLimits(**http))  # type: ignore[arg-type]
    yield from serving(tmp_path, f"sqlite:///{tmp_path / 'registry.sqlite'}", limits)


def test_header_line_over_max_header_bytes_is_refused_with_431(env: Env) -> None:
    with tls(env) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * MAX_HEADER_BYTES)
        reply = read_until_closed(sock)  # headers never finished: the server decides alone
    assert http_status(reply) == 431
    assert healthy(env)


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /" + b"a" * MAX_HEADER_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"X-Small: 0123456789abcdef\r\n" * 1000 + b"\r\n",
    ],
    ids=["long-url", "many-small-headers"],
)
def test_request_head_over_max_header_bytes_is_refused_with_431(
    env: Env, request_head: bytes
) -> None:
    with tls(env) as sock:
        sock.sendall(request_head)
        assert http_status(read_until_closed(sock)) == 431


def test_headers_within_max_header_bytes_are_served(env: Env) -> None:
    pad = b"a" * (MAX_HEADER_BYTES - 200)
    with tls(env) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: %s\r\n\r\n" % pad
        )
        assert http_status(read_until_closed(sock)) == 200


def test_300_mib_header_flood_is_cut_without_buffering(env: Env) -> None:
    before = peak_rss_bytes(os.getpid())  # the server runs in this process
    with tls(env) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        sent = stream_until_cut(sock, 300 * MiB, chunk_bytes=64 * 1024)
    assert sent < 64 * MiB  # cut after 16 KiB, plus what the socket buffers held
    assert peak_rss_bytes(os.getpid()) - before < 64 * MiB
    assert healthy(env)


@pytest.fixture
def slow_env(tmp_path: Path) -> Iterator[Env]:
    yield from served_with(tmp_path, header_timeout_s=1.0, body_timeout_s=1.0)


def test_slowloris_headers_are_cut_after_the_header_timeout(slow_env: Env) -> None:
    with tls(slow_env) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Pad: ")
        elapsed, reply = dribble_until_closed(sock)
    assert elapsed >= 0.9 and http_status(reply) == 408
    assert healthy(slow_env)


def test_connection_that_never_sends_a_request_is_cut_after_the_header_timeout(
    slow_env: Env,
) -> None:
    with tls(slow_env) as sock:
        assert http_status(read_until_closed(sock)) == 408


def test_slowloris_enrollment_body_is_cut_after_the_body_timeout(slow_env: Env) -> None:
    slow_env.add_device()
    token = slow_env.token()
    before = slow_env.snapshot()
    body = b'{"csr": "%s"}' % csr_for(new_key()).replace(b"\n", b"\\n")
    with tls(slow_env) as sock:
        head = (
            f"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:10])
        elapsed, reply = dribble_until_closed(sock)
    assert elapsed >= 0.9 and http_status(reply) in (0, 408)
    assert slow_env.snapshot() == before  # nothing issued, the device unchanged
    assert healthy(slow_env)


@pytest.fixture
def capped_env(tmp_path: Path) -> Iterator[Env]:
    yield from served_with(tmp_path, header_timeout_s=120.0, max_connections=2)


def keep_alive_request(sock: ssl.SSLSocket) -> int:
    """One request on a connection that stays open; the reply is read to its end."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(4096)
    head, _, body = reply.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return http_status(reply)


def test_connections_beyond_max_connections_are_told_to_come_back_with_429(
    capped_env: Env,
) -> None:
    held = [tls(capped_env) for _ in range(2)]
    try:
        assert [keep_alive_request(sock) for sock in held] == [200, 200]  # both counted now
        with tls(capped_env) as third:
            reply = read_until_closed(third)  # refused before any request: full, not failing
            assert http_status(reply) == 429
            assert b"\r\nretry-after: 2\r\n" in reply.lower()
        held.pop().close()
        wait_for(lambda: healthy(capped_env), what="a connection slot to be released")
    finally:
        for sock in held:
            sock.close()


def test_malformed_header_line_is_refused_with_400_and_cut(env: Env) -> None:
    with tls(env) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert http_status(read_until_closed(sock)) == 400
