"""The demo's processes: every part runs through its real CLI, as an operator would start it.

`DemoProcesses` wraps the `Supervisor`: long-running parts (`start`), one-shot commands
(`idmz`, `run`), a time bound shared by every wait (`Deadline`), and a last sweep that finds
any process whose command line names the demo directory (for instance a broker a part started
in its own session) so that nothing of the demo outlives it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from idmz.demo.layout import AUDIT_ORIGIN, DEMO_OPERATOR, DemoLayout
from idmz.demo.runner import StepFailedError
from idmz.supervisor import Child, Supervisor

T = TypeVar("T")


class Deadline:
    """The demo's time bound. Every wait takes the smaller of its own limit and what is left."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self.started = time.monotonic()

    def remaining(self) -> float:
        return self.total_s - (time.monotonic() - self.started)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def cap(self, timeout_s: float) -> float:
        left = self.remaining()
        if left <= 0:
            raise StepFailedError(f"the demo's time bound ({self.total_s:.0f} s) is used up")
        return min(timeout_s, left)


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    output: str


class DemoProcesses:
    def __init__(self, layout: DemoLayout, deadline: Deadline) -> None:
        self.layout = layout
        self.deadline = deadline
        self.supervisor = Supervisor(layout.logs)
        self._runs = 0
        # Every idmz child sees the same CA passphrase file, audit origin and operator name,
        # whatever the caller's environment says, so the demo never touches the caller's own
        # CA or log (idmz.audit_log, idmz.operator).
        self.env = {
            "IDMZ_CA_PASSPHRASE_FILE": str(layout.ca_passphrase),
            "IDMZ_AUDIT_ORIGIN": AUDIT_ORIGIN,
            "IDMZ_OPERATOR": DEMO_OPERATOR,
            "IDMZ_HOME": str(layout.root),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }

    # -- starting ------------------------------------------------------------------------

    def idmz_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "idmz", "--home", str(self.layout.root), *args]

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stdout_path: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> Child:
        env = {**self.env, **extra_env} if extra_env else self.env
        return self.supervisor.start(name, argv, env=env, stdout_path=stdout_path)

    def run(
        self,
        name: str,
        argv: Sequence[str],
        *,
        timeout_s: float = 60.0,
        extra_env: Mapping[str, str] | None = None,
        stdout_path: Path | None = None,
    ) -> Completed:
        """Run one command to completion (killed at the time bound); its output is logged
        (standard output to ``stdout_path`` instead, when given)."""
        self._runs += 1
        label = f"{self._runs:02d}-{name}"
        child = self.start(label, argv, extra_env=extra_env, stdout_path=stdout_path)
        try:
            child.process.wait(timeout=self.deadline.cap(timeout_s))
        except subprocess.TimeoutExpired:
            child.stop(grace_s=2.0)
            why = (
                f"the demo's time bound ({self.deadline.total_s:.0f} s) ran out"
                if self.deadline.remaining() <= 0
                else f"it did not finish within {timeout_s:.0f} s"
            )
            raise StepFailedError(f"`{describe(argv)}`: {why}\n{child.log_tail(8)}") from None
        return Completed(tuple(argv), child.process.returncode, child.log_path.read_text())

    def idmz(self, name: str, *args: str, timeout_s: float = 60.0) -> str:
        """Run ``idmz <args>`` against the demo home; its output, or a failure with its tail."""
        done = self.run(name, self.idmz_argv(*args), timeout_s=timeout_s)
        if done.returncode != 0:
            tail = "\n".join(done.output.strip().splitlines()[-6:])
            raise StepFailedError(f"`{describe(done.argv)}` exited {done.returncode}\n{tail}")
        return done.output

    # -- waiting -------------------------------------------------------------------------

    def wait_for(
        self,
        condition: Callable[[], T | None],
        *,
        what: str,
        timeout_s: float = 60.0,
        interval_s: float = 0.1,
        watch: Sequence[Child] = (),
    ) -> T:
        """Poll ``condition`` until it returns something truthy (an empty list is not yet).

        Fails early when a process in ``watch`` exits (its log tail says why)."""
        limit = time.monotonic() + self.deadline.cap(timeout_s)
        while True:
            value = condition()
            if value:
                return value
            for child in watch:
                if not child.alive():
                    raise StepFailedError(
                        f"{child.name} exited ({child.process.returncode}) while waiting for "
                        f"{what}\n{child.log_tail(8)}"
                    )
            if time.monotonic() >= limit:
                if self.deadline.remaining() <= 0:
                    raise StepFailedError(
                        f"the demo's time bound ({self.deadline.total_s:.0f} s) ran out "
                        f"waiting for {what}"
                    )
                raise StepFailedError(f"timed out waiting for {what}")
            time.sleep(interval_s)

    # -- logs and cleanup ----------------------------------------------------------------

    def child(self, name: str) -> Child | None:
        for c in self.supervisor.children():
            if c.name == name:
                return c
        return None

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.layout.logs / f"{name}.log"
        if not path.exists():
            path = self.layout.root / name  # a part's own log, relative to the demo root
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> list[str]:
        """Stop everything (reverse start order), then sweep; returns what the sweep found."""
        self.supervisor.close()
        return sweep(self.layout.root)


SECRET_OPTIONS = ("--token",)  # values never printed (one-time enrollment tokens)


def redact(argv: Sequence[str]) -> list[str]:
    return ["***" if i > 0 and argv[i - 1] in SECRET_OPTIONS else a for i, a in enumerate(argv)]


def describe(argv: Sequence[str]) -> str:
    """A command as a failure message shows it: short, secrets masked."""
    args = redact(argv)
    if len(args) > 4 and args[1:3] == ["-m", "idmz"]:
        args = ["idmz", *args[5:]]
    text = " ".join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args))
    return text if len(text) <= 90 else text[:87] + "..."


_OURS = {b"mosquitto", b"mosquitto_sub", b"mosquitto_pub", b"idmz"}


def processes_naming(root: Path) -> list[tuple[int, str]]:
    """(pid, command line) of the demo's kind of processes (idmz, Mosquitto and its clients)
    whose command line names ``root``; a viewer or editor the user opened there is left alone."""
    needle = str(root.resolve()).encode()
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = cmd.split(b"\0")
        if needle not in cmd:
            # A relay worker (multiprocessing spawn) names no path; it carries our IDMZ_HOME.
            if not any(b"multiprocessing" in a for a in argv[:4]) or not _home_is(entry, needle):
                continue
            found.append((int(entry.name), _text(argv)))
            continue
        names = {Path(a.decode(errors="replace")).name.encode() for a in argv[:3]}
        if names & _OURS or (b"-m" in argv[:3] and b"idmz" in argv[:4]):
            found.append((int(entry.name), _text(argv)))
    return found


def _text(argv: list[bytes]) -> str:
    return " ".join(redact([a.decode(errors="replace") for a in argv if a]))


def _home_is(proc: Path, root: bytes) -> bool:
    try:
        environ = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"IDMZ_HOME=" + root in environ


def sweep(root: Path, grace_s: float = 5.0) -> list[str]:
    """Stop processes left behind under ``root`` (TERM, then KILL); describe each one."""
    left = processes_naming(root)
    for pid, _ in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    limit = time.monotonic() + grace_s
    while time.monotonic() < limit and any(process_running(pid) for pid, _ in left):
        time.sleep(0.1)
    # Look again before SIGKILL: a PID that exited meanwhile may already be someone else's.
    still = {pid for pid, cmd in processes_naming(root) if (pid, cmd) in left}
    for pid in still:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return [f"pid {pid}: {cmd.strip()[:160]}" for pid, cmd in left]


def process_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
