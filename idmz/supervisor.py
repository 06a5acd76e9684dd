"""Child processes that never outlive their parent.

Every process idmz starts (brokers, relay workers, the provisioning service, simulators,
gateways, independent test clients) goes through `Supervisor`, which:

* starts it in its own process group, with ``PR_SET_PDEATHSIG`` so the kernel sends SIGTERM
  if the supervising process dies, even by SIGKILL;
* logs its output to a file (never to the terminal the user is reading);
* stops everything in reverse start order with SIGTERM, then SIGKILL after a grace period, on
  `close()`, on ^C and at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


try:
    # Loaded once here: the child between fork and exec must not load libraries or take locks.
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: children still get stopped by close()/atexit
    _LIBC = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: tuple[str, ...]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def stop(self, grace_s: float = 10.0) -> None:
        # Once the child is gone and reaped, its group id may name someone else's group
        # (PIDs are reused): never signal it then. A child killed hard can leave processes
        # behind; whoever runs it must find those another way (the demo sweeps its directory).
        if not self.alive():
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=grace_s)
        self._stop_group(grace_s)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member changed user; it still exists
            return True
        return True

    def _stop_group(self, grace_s: float) -> None:
        """Members of the group can outlive its leader (a child's own workers that ignore or
        are slow on SIGTERM): TERM them, then KILL. Called right after the leader exited: the
        kernel does not reuse a group id while a member holds it, so this reaches only
        processes this child started."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._group_alive():
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and self._group_alive():
                time.sleep(0.05)


class Supervisor:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._children: list[Child] = []
        self._lock = threading.Lock()
        atexit.register(self.close)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdout_path: Path | None = None,
    ) -> Child:
        # With ``stdout_path`` (a client's captured output) stderr still goes to the log file.
        log_path = self.log_dir / f"{name}.log"
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with log_path.open("ab") as log, (stdout_path or log_path).open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=log if stdout_path is not None else subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                preexec_fn=_die_with_parent,
                process_group=0,
            )
        child = Child(name, tuple(argv), proc, log_path)
        with self._lock:
            self._children.append(child)
        _log.info("started %s (pid %d)", name, proc.pid)
        return child

    def children(self) -> list[Child]:
        with self._lock:
            return list(self._children)

    def close(self) -> None:
        with self._lock:
            children, self._children = list(reversed(self._children)), []
        for child in children:
            try:
                child.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                _log.warning("could not stop %s: %s", child.name, exc)
