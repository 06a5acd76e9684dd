"""Who spends the CPU during a phase of bench/relay.py: every process of it, by role, from /proc.

A phase moves messages through processes that each run on one core at a time: the OT broker and
the IT broker (single-threaded Mosquitto), the historian's ``mosquitto_sub``, the gateways'
``mosquitto_pub`` (while they publish inside the phase) and, for the relay, the workers (three
busy threads holding one GIL: about one core at most each). `Meter` reads user + system time of
each of them at the start and at the end of the phase (a child that exits is read as a zombie,
before it is reaped), and the machine's busy time from ``/proc/stat``, so a phase reports:

- ``cores_busy``: the phase's processes' CPU seconds / wall seconds (out of ``os.cpu_count()``);
- ``machine_busy``: all busy CPU on the machine over the same wall time (other load included);
- per role, CPU microseconds per message and the share of one core it kept busy.

Two ratios follow from a bridge phase and a relay phase of the same kind:

- ``predicted``: bridge CPU per message / relay CPU per message, all processes summed. It is the
  relay/bridge rate ratio when both saturate the same cores, which is what they do on a 2-core
  machine when no process of either is a single-core bottleneck;
- ``manycore``: the bridge's busiest process / the relay's busiest process, in CPU per message
  (each worker process counted by itself): the ratio when every process has a core of
  its own, i.e. what more cores would give.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("ot_broker", "it_broker", "workers", "subscriber", "publishers")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent not idle (nor waiting for I/O) so far."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK  # minus idle and iowait


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the child has exited, without reaping it (its /proc entry stays readable)."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


@dataclass
class Usage:
    """CPU seconds per role over ``wall`` seconds in which ``messages`` were forwarded."""

    wall: float
    messages: int
    cpu: dict[str, float]
    machine: float
    per_process: dict[int, tuple[str, float]] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.cpu.values())

    @property
    def cores_busy(self) -> float:
        return self.total / self.wall

    @property
    def machine_busy(self) -> float:
        return self.machine / self.wall

    def us(self, *roles: str) -> float:
        """CPU microseconds per message of ``roles`` together (all roles if none named)."""
        return sum(self.cpu[r] for r in roles or ROLES) / self.messages * 1e6

    def busiest_us(self) -> float:
        """CPU per message of the process that would cap the rate with a core to itself."""
        return max(cpu for _role, cpu in self.per_process.values()) / self.messages * 1e6

    def describe(self) -> str:
        parts = " ".join(
            f"{r} {self.us(r):.1f} us ({self.cpu[r] / self.wall:.2f} cores)"
            for r in ROLES
            if self.cpu[r]
        )
        return (
            f"{self.cores_busy:.2f} of {os.cpu_count()} cores busy "
            f"(machine {self.machine_busy:.2f}), {self.us():.1f} us/msg in all: {parts}"
        )


def predicted_ratio(bridge: Usage, relay: Usage) -> float:
    return bridge.us() / relay.us()


def manycore_ratio(bridge: Usage, relay: Usage) -> float:
    return bridge.busiest_us() / relay.busiest_us()


class Meter:
    """The CPU of a phase's processes from `start` to `stop`. A process named after the start
    (a publisher launched inside the phase) counts from zero; a child that exits inside the
    phase is read by `child_done` before it is reaped."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self._role: dict[int, str] = {pid: role for role, pids in roles.items() for pid in pids}
        self._start: dict[int, float] = {}
        self._end: dict[int, float] = {}
        self._t0 = self._m0 = 0.0

    def start(self) -> None:
        self._start = {pid: cpu_seconds(pid) for pid in self._role}
        self._m0, self._t0 = machine_busy_seconds(), time.monotonic()

    def add(self, role: str, pid: int) -> None:
        self._role.setdefault(pid, role)

    def child_done(self, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        """Wait for a child to exit, read its CPU as a zombie, then reap it."""
        deadline = time.monotonic() + timeout
        while not exited(proc):
            if time.monotonic() > deadline:
                proc.kill()
                break
            time.sleep(0.01)
        if proc.pid in self._role:
            self._end[proc.pid] = cpu_seconds(proc.pid)
        proc.wait()

    def stop(self, messages: int) -> Usage:
        wall = time.monotonic() - self._t0
        machine = machine_busy_seconds() - self._m0
        for pid in self._role:
            if pid not in self._end:
                self._end[pid] = cpu_seconds(pid)
        cpu = dict.fromkeys(ROLES, 0.0)
        per_process = {}
        for pid, role in self._role.items():
            used = self._end[pid] - self._start.get(pid, 0.0)
            cpu[role] += used
            per_process[pid] = (role, used)
        return Usage(wall, messages, cpu, machine, per_process)
