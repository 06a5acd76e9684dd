"""The witness HTTP server against hostile clients on raw sockets: lengths it must not trust,
bodies it must not buffer, clients that send slowly or open too many connections. After each
refusal the witness has cosigned nothing and still serves honest clients."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.keys import witness_cosigner
from audit.note import NoteSigner
from audit.witness import MAX_REQUEST_BYTES, Witness
from audit.witness_http import WitnessHttpLimits, make_server
from bedrock.clock import SystemClock
from tests.support.net import (
    dribble_until_closed,
    free_port,
    http_status,
    peak_rss_bytes,
    read_until_closed,
    stream_until_cut,
    wait_for,
)

ORIGIN = "plant1.example/idmz-audit"
MiB = 1024 * 1024
LOG = NoteSigner.generate(ORIGIN)


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[Witness]:
    state = tmp_path / "witness"
    w = Witness(state, witness_cosigner(state, "it.example/w"), [LOG.verifier], clock=SystemClock())
    yield w
    w.close()


@contextlib.contextmanager
def serve(witness: Witness, limits: WitnessHttpLimits) -> Iterator[int]:
    server = make_server(witness, "127.0.0.1", 0, limits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def port(witness: Witness) -> Iterator[int]:
    with serve(witness, WitnessHttpLimits()) as port:
        yield port


def post_head(port: int, *headers: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = "".join(f"{h}\r\n" for h in ("POST /add-checkpoint HTTP/1.1", "Host: w", *headers))
    sock.sendall(head.encode("latin-1") + b"\r\n")
    return sock


def vkey_served(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /vkey HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
        return http_status(read_until_closed(sock)) == 200


def test_negative_content_length_with_a_200_mib_body_is_refused_without_buffering(
    tmp_path: Path,
) -> None:
    """The real `idmz audit witness serve` process: its peak memory stays where it started."""
    state, port = tmp_path / "witness", free_port()
    cmd = [sys.executable, "-m", "tests.audit.audit_cli", "audit", "witness", "serve"]
    args = ["--state", str(state), "--name", "it.example/w", "--log-key", LOG.verifier.vkey]
    proc = subprocess.Popen([*cmd, *args, "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        wait_for(lambda: vkey_served(port), what="the witness to serve")
        before = peak_rss_bytes(proc.pid)
        with post_head(port, "Content-Length: -1") as sock:
            reply = sock.recv(4096)
            sent = stream_until_cut(sock, 200 * MiB)
        assert http_status(reply) == 400 and b"Connection: close" in reply
        assert sent < 200 * MiB  # the server closed the connection instead of reading
        assert peak_rss_bytes(proc.pid) - before < 16 * MiB
        assert vkey_served(port)
        assert not list(state.glob("*.checkpoint"))  # nothing was cosigned
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), 411),
        (("Content-Length: -1",), 400),
        (("Content-Length: 12abc",), 400),
        (("Content-Length: 0x10",), 400),
        (("Content-Length: \xb2",), 400),  # SUPERSCRIPT TWO: str.isdigit() says yes
        (("Content-Length: 5, 5",), 400),
        (("Content-Length: 5", "Content-Length: 5"), 400),
        (("Transfer-Encoding: chunked",), 400),
        (("Content-Length: 5", "Transfer-Encoding: chunked"), 400),
        ((f"Content-Length: {MAX_REQUEST_BYTES + 1}",), 413),
        (("Content-Length: " + "0" * 40 + str(MAX_REQUEST_BYTES + 1),), 413),
        (("Content-Length: " + "9" * 5000,), 413),
        ((f"Content-Length: {MAX_REQUEST_BYTES + 1}", "Expect: 100-continue"), 413),
    ],
)
def test_untrustworthy_content_length_is_refused_before_the_body(
    witness: Witness, port: int, headers: tuple[str, ...], expected: int
) -> None:
    with post_head(port, *headers) as sock:
        reply = read_until_closed(sock)  # the server answers on the headers alone, then closes
    assert http_status(reply) == expected and b"100 Continue" not in reply
    assert witness.latest(ORIGIN) is None
    assert vkey_served(port)


@pytest.fixture
def slow_port(witness: Witness) -> Iterator[int]:
    limits = WitnessHttpLimits(header_timeout_s=1.0, body_timeout_s=1.0, max_connections=1)
    with serve(witness, limits) as port:
        yield port


def test_slowloris_headers_are_cut_after_the_header_timeout(slow_port: int) -> None:
    with socket.create_connection(("127.0.0.1", slow_port), timeout=30) as sock:
        sock.sendall(b"POST /add-checkpoint HTTP/1.1\r\nX-Pad: ")
        assert dribble_until_closed(sock)[0] >= 0.9
    # Its only connection slot is free again.
    wait_for(lambda: vkey_served(slow_port), what="the slot to be released")


def test_slowloris_body_is_cut_after_the_body_timeout(witness: Witness, slow_port: int) -> None:
    with post_head(slow_port, f"Content-Length: {MAX_REQUEST_BYTES}") as sock:
        assert dribble_until_closed(sock)[0] >= 0.9
    assert witness.latest(ORIGIN) is None
    wait_for(lambda: vkey_served(slow_port), what="the slot to be released")


def test_connections_beyond_the_cap_are_refused_with_503(witness: Witness) -> None:
    limits = WitnessHttpLimits(header_timeout_s=60.0, max_connections=2)
    with serve(witness, limits) as port:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as third:
            reply = read_until_closed(third)
        assert http_status(reply) == 503
        idle.pop().close()
        wait_for(lambda: vkey_served(port), what="a slot to be released")
        idle.pop().close()
