"""Loopback ports, waiting on conditions (never fixed sleeps), and raw-socket clients that
behave badly on purpose (slowloris, floods)."""

from __future__ import annotations

import itertools
import os
import random
import select
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# Ports for the servers tests start, chosen below Linux's ephemeral range (32768-60999): a port
# taken from that range and released could be given to any outgoing connection (the power-up
# test makes thousands) before the server binds it. Each pytest-xdist process draws from its
# own slice, so two processes never hand out the same port either.
_PORTS_LOW, _PORTS_HIGH = 20000, 32768


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1), index + 1)
    size = (_PORTS_HIGH - _PORTS_LOW) // count
    return range(_PORTS_LOW + index * size, _PORTS_LOW + (index + 1) * size)


_ports = _slice()
_next = itertools.count(random.randrange(len(_ports)))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from this test process's own slice
    below the ephemeral range (ports in use, by anything on the machine, are passed over)."""
    for _ in range(len(_ports)):
        port = _ports[next(_next) % len(_ports)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_ports}")


def wait_for(
    condition: Callable[[], object],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
) -> object:
    """Poll ``condition`` until it returns something truthy; fail loudly after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:  # noqa: BLE001 - the condition may fail until it holds
            last_exc = exc
        else:
            if value:
                return value
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}; last error: {last_exc!r}")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Terminate ``process`` and reap it; kill it if it does not exit within ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes the connection (or resets it)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError:  # a reset, or TLS closed without close_notify: what came before counts
        pass
    return data


def http_status(reply: bytes) -> int:
    """The status code of a raw HTTP/1.1 reply (0 when there is none)."""
    parts = reply.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def dribble_until_closed(
    sock: socket.socket, *, interval_s: float = 0.05, give_up_s: float = 120.0
) -> tuple[float, bytes]:
    """Slowloris: send one byte every ``interval_s`` and never finish. Returns the seconds
    until the peer closed the connection and what it sent before; fails after ``give_up_s``."""
    start, received = time.monotonic(), b""
    while time.monotonic() - start < give_up_s:
        try:
            sock.send(b"a")
            readable, _, _ = select.select([sock], [], [], interval_s)
            if readable:
                chunk = sock.recv(4096)
                if not chunk:
                    return time.monotonic() - start, received
                received += chunk
        except OSError:
            return time.monotonic() - start, received
    raise AssertionError(f"the connection was still open after {give_up_s}s")


def stream_until_cut(sock: socket.socket, total_bytes: int, chunk_bytes: int = 1 << 20) -> int:
    """Send up to ``total_bytes``; how many went out before the peer cut the connection."""
    chunk, sent = b"A" * chunk_bytes, 0
    try:
        while sent < total_bytes:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    return sent


def peak_rss_bytes(pid: int) -> int:
    """A process's peak resident memory (VmHWM), to show that input was not buffered."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")
