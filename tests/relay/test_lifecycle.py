"""`idmz relay run` as operators run it, in a subprocess: its rendered broker directory passes
`idmz policy check --deployment`, and nothing it started outlives it when it is SIGKILLed (the
brokers, the workers and multiprocessing's resource tracker are stopped by the kernel's
parent-death signal and the brokers' ports are free again)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.relay.conftest import POLICY_PATH, RELAY_ID, Plant
from tests.support.net import free_port, port_open, wait_for

pytestmark = [pytest.mark.integration]

IDMZ = [sys.executable, "-m", "idmz"]


@dataclass
class RunningRelay:
    proc: subprocess.Popen[bytes]
    home: Path
    ot_port: int
    it_port: int
    health_port: int
    log: Path


def _relay_toml(plant: Plant, ot_port: int, it_port: int, health_port: int) -> str:
    relay = plant.creds[RELAY_ID]
    return f"""
policy = "{POLICY_PATH}"
workers = 2
audit_origin = "test.example/idmz-audit"

[ot]
managed = true
bind_address = "127.0.0.1"
host = "127.0.0.1"
port = {ot_port}

[it]
managed = true
bind_address = "127.0.0.1"
host = "127.0.0.1"
port = {it_port}

[tls]
ca = "{plant.pki.cafile}"
relay_cert = "{relay.cert}"
relay_key = "{relay.key}"
server_cert = "{plant.server.cert}"
server_key = "{plant.server.key}"

[health]
host = "127.0.0.1"
port = {health_port}
"""


def _health_ok(port: int) -> bool:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
        body = json.loads(resp.read())
    return bool(body.get("status") == "ok")


@pytest.fixture
def running(plant: Plant, tmp_path: Path) -> Iterator[RunningRelay]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "ca").symlink_to(plant.pki.dir / "ca")  # the CA's CRL, issuing cert and ledger
    ot_port, it_port, health_port = free_port(), free_port(), free_port()
    config = tmp_path / "relay.toml"
    config.write_text(_relay_toml(plant, ot_port, it_port, health_port))
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*IDMZ, "--home", str(home), "relay", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningRelay(proc, home, ot_port, it_port, health_port, log)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"idmz relay run exited:\n{log.read_text()}")
            return _health_ok(health_port)

        wait_for(up, timeout_s=90, interval_s=0.2, what="idmz relay run healthy")
        yield running
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a live process, from /proc; None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every live descendant of ``root``."""
    parents: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[1] != "Z":
                parents[int(entry.name)] = (st[0], st[2])
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def _gone(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is None or st[1] == "Z" or st[2] != start  # exited, unreaped, or PID reused


def _bindable(port: int) -> bool:
    """Another Mosquitto could listen here now (it sets SO_REUSEADDR, as we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


def test_rendered_broker_directory_passes_policy_check(running: RunningRelay) -> None:
    brokers = running.home / "relay" / "brokers"
    assert (brokers / "policy.toml").read_text() == POLICY_PATH.read_text()
    check = subprocess.run(
        [*IDMZ, "--home", str(running.home), "policy", "check", "--deployment", str(brokers)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_sigkill_of_the_appliance_stops_everything_it_started(running: RunningRelay) -> None:
    children = _descendants(running.proc.pid)
    names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in children}
    assert sum(b"mosquitto" in c for c in names.values()) == 2, names
    assert sum(b"spawn_main" in c for c in names.values()) >= 2, names  # workers (+ tracker)
    assert port_open(running.ot_port) and port_open(running.it_port)

    os.kill(running.proc.pid, signal.SIGKILL)
    running.proc.wait(timeout=10)

    def all_gone() -> bool:
        return all(_gone(pid, start) for pid, start in children.items())

    try:
        wait_for(all_gone, timeout_s=45, interval_s=0.1, what="the appliance's children to exit")
    finally:  # never leave them behind, whatever the assertion said
        for pid, start in children.items():
            if not _gone(pid, start):
                os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: _bindable(running.ot_port) and _bindable(running.it_port),
        timeout_s=10,
        what="the brokers' ports to be free",
    )
    assert not port_open(running.health_port)
