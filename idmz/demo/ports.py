"""The demo's loopback ports: fixed-free, below the kernel's ephemeral range.

A port taken with ``bind(0)`` comes from the ephemeral range, which every outgoing connection on
the machine also draws from; on a busy CI host one of those can land on it between our choice
and the server's bind. Ports below the range are only ever taken by explicit listeners, so a
port that is free now stays free for the demo's few seconds of start-up.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, fields
from pathlib import Path

LOW_PORT = 20000  # above the well-known and most registered service ports


@dataclass(frozen=True, slots=True)
class Ports:
    provisioning: int
    ot: int
    it: int
    relay_health: int
    opcua: int
    modbus: int
    press_1_metrics: int
    press_2_metrics: int
    # The managed brokers' bound-id listeners (ADR 0058): the demo's own subscribers connect
    # there with client ids <identity>:demo-<name>, so no attack displaces them.
    ot_bound: int
    it_bound: int
    vault: int = 0  # the OpenBao dev server of `idmz demo --ca vault`
    release: int = 0  # the release repository (`idmz release serve`)


def ephemeral_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pick_ports(rng: random.Random | None = None) -> Ports:
    """Distinct ports, free now, between LOW_PORT and the ephemeral range."""
    rng = rng or random.Random()  # noqa: S311 - choosing ports, not secrets
    top = max(ephemeral_start(), LOW_PORT + 1000)
    chosen: list[int] = []
    for _ in range(10_000):
        port = rng.randrange(LOW_PORT, top)
        if port not in chosen and bindable(port):
            chosen.append(port)
            if len(chosen) == len(fields(Ports)):
                return Ports(*chosen)
    raise OSError(f"no {len(fields(Ports))} free loopback ports between {LOW_PORT} and {top}")
