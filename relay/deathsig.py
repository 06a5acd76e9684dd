"""Children that die with the appliance: Linux ``PR_SET_PDEATHSIG``.

The managed brokers and the worker processes must not outlive ``idmz relay run``, even when it
is killed with SIGKILL and has no chance to stop them: they would keep their ports, and the
next appliance could not start. The kernel sends each child SIGTERM when its parent dies
(Mosquitto then writes its persistence and exits; a worker stops as on ``idmz relay`` stop).

Two ways in, the same mechanism (``idmz.supervisor`` does the same for idmz's own children;
relay cannot import idmz):

* `preexec_die_with_parent` for `subprocess.Popen` (the brokers). It runs in the child between
  fork and exec, where nothing may load a library or take a lock: libc is loaded once, here,
  at import in the parent, and the function only calls ``prctl`` and ``getppid``.
* `die_with_parent` at the top of a spawned worker process (multiprocessing ``spawn`` offers no
  pre-exec hook); an ordinary Python process, so it may load what it likes.

Both close the race where the parent died before ``prctl`` ran (the child was already
re-parented, so the signal would never come): they compare ``getppid()`` with the parent's pid
and exit at once when it changed.

The kernel sends the signal when the *thread* that started the child exits, not only the
process. The appliance starts and restarts children from its main thread, its supervisor
thread and the CRL watcher's thread, all of which live until `Appliance.stop`, which stops the
children anyway. Without glibc (not Linux) nothing is set: `Appliance.stop` still stops them.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux
    _LIBC = None


def available() -> bool:
    return _LIBC is not None


def preexec_die_with_parent(parent_pid: int) -> None:
    """For ``Popen(preexec_fn=functools.partial(preexec_die_with_parent, os.getpid()))``.

    Runs in the forked child before exec: async-signal-safe calls only."""
    if _LIBC is None:
        return
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl: no signal will come
        os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a spawned child: SIGTERM when ``parent_pid`` dies."""
    if _LIBC is None:
        return
    if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent_pid:
        os._exit(1)
