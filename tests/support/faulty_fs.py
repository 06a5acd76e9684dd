"""A real filesystem that fails on command: a passthrough FUSE mount over a backing directory
whose ``fsync``/``fdatasync``, ``write`` or ``truncate`` return an errno (EIO, ENOSPC) from the
moment a test says so.

    with mount_faulty_fs(tmp_path) as fs:            # fs.mountpoint passes through to fs.backing
        log = AuditLog.open(fs.mountpoint / "audit", origin=ORIGIN)
        fs.fail("fsync", errno.EIO, name="entries.jsonl")   # every later fdatasync: EIO
        ...
        fs.heal()

The filesystem runs in its own process (this file run as a script, on fusepy over libfuse2,
which scripts/bootstrap installs), so it never waits for the test's GIL and a test that
hangs cannot wedge it. The test and the filesystem talk through files in a control directory
outside the mount:

- ``faults``: one rule a line, ``<op> <ERRNO> <file name or *> [short] [once] id=<n>``,
  replaced atomically and read by the filesystem on every operation. ``short`` makes the
  first failing ``write`` store half of its bytes and report a short count, as a filesystem
  filling up does; the writes after it fail. ``once`` fails only the next matching call:
  Linux reports a writeback error to one ``fsync`` and the next one succeeds although the
  data may be gone ("fsyncgate"), so code must never take a later fsync's success as
  durability.
  ``<op> STALL <file name or *> id=<n>`` holds every matching ``fsync`` (after its fault
  check, before it reaches the disk) for as long as the rule is in force: a slow disk whose
  flush ends when the test says so (``stall``/``unstall``).
- ``ops.log``: one line per modifying operation the kernel passed down,
  ``<op> <path> <offset> <size> <result>``, so a test can assert what reached the disk.

Teardown is ``fusermount -u`` (or ``umount``, then a lazy ``umount -l``) and then the process
is ended; the filesystem also unmounts itself when the process that started it dies.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

FAULTS = "faults"
OPS_LOG = "ops.log"
FAULTABLE = ("fsync", "fsyncdir", "write", "truncate")


# -- the test's side --------------------------------------------------------------------------


class FuseUnavailableError(Exception):
    """FUSE cannot be mounted in this environment (the message says why); tests skip."""


@dataclass(frozen=True)
class Op:
    """One modifying operation as the filesystem saw it."""

    op: str
    path: str
    offset: int
    size: int
    result: str  # "ok" or the errno name returned


@dataclass
class FaultyFs:
    backing: Path
    mountpoint: Path
    control: Path
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def fail(
        self,
        op: str,
        error: int,
        *,
        name: str | None = None,
        short: bool = False,
        once: bool = False,
    ) -> None:
        """From now on ``op`` (``fsync`` covers fsync and fdatasync) on files called ``name``
        (any file if None) returns ``error``; with ``once`` only the next such call does (as
        Linux reports a writeback error to one fsync and then forgets it). Adds to the rules
        already in force."""
        if op not in FAULTABLE:
            raise ValueError(f"cannot fail {op!r}; one of {FAULTABLE}")
        if short and op != "write":
            raise ValueError("short applies to write")
        flags = [*(["short"] * short), *(["once"] * once)]
        # A fresh id keeps a re-added rule from counting as one that already fired.
        rule = " ".join([op, errno.errorcode[error], name or "*", *flags, f"id={time.time_ns()}"])
        self._write_rules([*self._rules(), rule])

    def stall(self, op: str = "fsync", *, name: str | None = None) -> None:
        """From now on ``op`` (only ``fsync`` can stall) on files called ``name`` waits,
        without reaching the disk, until `unstall`; each stall is logged as ``stalled``."""
        if op != "fsync":
            raise ValueError("only fsync stalls")
        rule = " ".join([op, "STALL", name or "*", f"id={time.time_ns()}"])
        self._write_rules([*self._rules(), rule])

    def unstall(self, *, name: str | None = None) -> None:
        """Let stalled and later fsyncs go on (only those of ``name``'s STALL rule if given);
        the other rules stay in force."""
        kept = []
        for rule in self._rules():
            _, kind, target, *_ = rule.split()
            if kind != "STALL" or (name is not None and target != name):
                kept.append(rule)
        self._write_rules(kept)

    def heal(self) -> None:
        """Every operation succeeds again."""
        self._write_rules([])

    def ops(self) -> list[Op]:
        path = self.control / OPS_LOG
        if not path.exists():
            return []
        result = []
        for line in path.read_text().splitlines():
            op, p, offset, size, outcome = line.split(" ")
            result.append(Op(op, p, int(offset), int(size), outcome))
        return result

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def _rules(self) -> list[str]:
        path = self.control / FAULTS
        return path.read_text().splitlines() if path.exists() else []

    def _write_rules(self, rules: list[str]) -> None:
        tmp = self.control / f".{FAULTS}.tmp"
        tmp.write_text("".join(f"{r}\n" for r in rules))
        os.replace(tmp, self.control / FAULTS)

    def unmount(self) -> None:
        """Unmount and end the filesystem process; safe to call twice."""
        try:
            if os.path.ismount(self.mountpoint):
                _unmount(self.mountpoint)
        finally:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                # Lazily unmounted while a failed test still holds files open: end it now
                # (the kernel aborts the connection; those files then answer ENOTCONN).
                self.process.kill()
                self.process.wait(timeout=10)


def fuse_unavailable_reason() -> str | None:
    """Why FUSE cannot be mounted here, or None if it might be (mounting tells for sure)."""
    if not Path("/dev/fuse").exists():
        return "/dev/fuse does not exist (no FUSE device in this environment)"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"cannot open /dev/fuse: {exc}"
    return None


@contextlib.contextmanager
def mount_faulty_fs(workdir: Path) -> Iterator[FaultyFs]:
    """Mount a faulty passthrough filesystem at ``workdir/mnt`` over ``workdir/backing``.
    Raises `FuseUnavailableError` when this environment cannot mount FUSE."""
    from tests.support.net import wait_for  # not at the top: the filesystem runs this file

    reason = fuse_unavailable_reason()
    if reason is not None:
        raise FuseUnavailableError(reason)
    # A missing library is a setup error, not a limit of the environment: fail, don't skip.
    if ctypes.util.find_library("fuse") is None:
        raise RuntimeError("libfuse2 is not installed: run scripts/bootstrap")
    backing, mountpoint, control = (workdir / d for d in ("backing", "mnt", "control"))
    for d in (backing, mountpoint, control):
        d.mkdir(parents=True, exist_ok=True)
    stderr_path = control / "fs.stderr"
    with stderr_path.open("wb") as err:
        argv = [sys.executable, __file__, str(backing), str(mountpoint), str(control)]
        proc = subprocess.Popen(
            [*argv, str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
        )
    fs = FaultyFs(backing, mountpoint, control, proc, stderr_path)
    try:
        wait_for(
            lambda: proc.poll() is not None or os.path.ismount(mountpoint),
            timeout_s=30,
            what=f"the faulty filesystem at {mountpoint}",
        )
        if proc.poll() is not None:
            out = fs.stderr()
            # Missing privilege (no CAP_SYS_ADMIN, no setuid fusermount) is the environment's
            # limit, not a bug in this filesystem: report it as unavailable.
            said = [line for line in out.splitlines() if line.startswith("fuse:")]
            if said and any(s in out for s in ("not permitted", "Permission denied", "fusermount")):
                raise FuseUnavailableError(
                    f"mounting FUSE is not permitted here (needs CAP_SYS_ADMIN or a setuid "
                    f"fusermount): {' / '.join(said)}"
                )
            raise RuntimeError(f"the faulty filesystem exited with {proc.returncode}:\n{out}")
        yield fs
    finally:
        fs.unmount()


def _unmount(mountpoint: Path) -> None:
    for argv in (["fusermount", "-u"], ["fusermount3", "-u"], ["umount"]):
        if shutil.which(argv[0]) is None:
            continue
        done = subprocess.run([*argv, str(mountpoint)], capture_output=True, check=False)
        if done.returncode == 0:
            return
    # Still busy (a file left open by a failed test): detach it now, it goes when released.
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


# -- the filesystem's side (this file run as a script) ----------------------------------------


class _Faults:
    """The rules in ``control/faults``, re-read on every operation (a few µs)."""

    def __init__(self, control: Path) -> None:
        self._path = control / FAULTS
        self._short_done: set[str] = set()
        self._spent: set[str] = set()  # "once" rules that have fired
        self._lock = threading.Lock()

    def check(self, op: str, path: str) -> tuple[int, bool] | None:
        """(errno, short) of the first rule in force matching ``op`` on ``path``, or None."""
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            return None
        name = os.path.basename(path)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[0] != op or parts[2] not in ("*", name):
                continue
            if parts[1] == "STALL":
                continue
            flags = parts[3:]
            with self._lock:
                if line in self._spent:
                    continue
                if "once" in flags:
                    self._spent.add(line)
                # The first failing write is short, the ones after it fail.
                if "short" in flags and line not in self._short_done:
                    self._short_done.add(line)
                    return getattr(errno, parts[1]), True
            return getattr(errno, parts[1]), False
        return None

    def stalled(self, op: str, path: str) -> bool:
        """Whether a STALL rule in force matches ``op`` on ``path``."""
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            return False
        name = os.path.basename(path)
        return any(
            p[:2] == [op, "STALL"] and p[2] in ("*", name)
            for p in (line.split() for line in text.splitlines())
            if len(p) >= 3
        )


def _serve(backing: Path, mountpoint: Path, control: Path, parent_pid: int) -> None:
    from fuse import FUSE, FuseOSError, Operations  # type: ignore[import-untyped]

    faults = _Faults(control)
    ops_log = (control / OPS_LOG).open("a", buffering=1)
    log_lock = threading.Lock()

    def record(op: str, path: str, offset: int, size: int, result: str) -> None:
        with log_lock:
            ops_log.write(f"{op} {path} {offset} {size} {result}\n")

    def fault(
        op: str, path: str, offset: int = 0, size: int = 0, label: str = ""
    ) -> tuple[int, bool] | None:
        found = faults.check(op, path)
        if found is not None and not found[1]:
            record(label or op, path, offset, size, errno.errorcode[found[0]])
            raise FuseOSError(found[0])
        return found

    class Passthrough(Operations):  # type: ignore[misc]
        use_ns = True

        def _full(self, path: str) -> str:
            return os.path.join(backing, path.lstrip("/"))

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
            attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
            for k in ("st_atime", "st_mtime", "st_ctime"):
                attrs[k] = getattr(st, f"{k}_ns")
            return attrs

        def access(self, path: str, amode: int) -> None:
            if not os.access(self._full(path), amode):
                raise FuseOSError(errno.EACCES)

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._full(path))]

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(self._full(path), mode)
            record("mkdir", path, 0, 0, "ok")

        def rmdir(self, path: str) -> None:
            os.rmdir(self._full(path))
            record("rmdir", path, 0, 0, "ok")

        def unlink(self, path: str) -> None:
            os.unlink(self._full(path))
            record("unlink", path, 0, 0, "ok")

        def rename(self, old: str, new: str) -> None:
            os.replace(self._full(old), self._full(new))
            record("rename", f"{old}->{new}", 0, 0, "ok")

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(self._full(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(self._full(path), uid, gid)

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
            if times is None:
                os.utime(self._full(path))
            else:
                os.utime(self._full(path), ns=times)

        def statfs(self, path: str) -> dict[str, int]:
            sv = os.statvfs(self._full(path))
            keys = ("bavail", "bfree", "blocks", "bsize", "favail", "ffree", "files", "flag")
            return {f"f_{k}": getattr(sv, f"f_{k}") for k in (*keys, "frsize", "namemax")}

        def open(self, path: str, flags: int) -> int:
            # The kernel passes the offset of every write, appends included.
            return os.open(self._full(path), flags & ~os.O_APPEND)

        def create(self, path: str, mode: int, fi: object = None) -> int:
            # fusepy does not pass the open flags here; read-write serves every caller.
            fd = os.open(self._full(path), os.O_RDWR | os.O_CREAT, mode)
            record("create", path, 0, 0, "ok")
            return fd

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            found = fault("write", path, offset, len(data))
            if found is not None:  # short: store half, report it; the next write fails
                data = data[: len(data) // 2]
            written = os.pwrite(fh, data, offset)
            record("write", path, offset, written, "short" if found else "ok")
            return written

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            fault("truncate", path, length)
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._full(path), length)
            record("truncate", path, length, 0, "ok")

        def flush(self, path: str, fh: int) -> None:
            return None

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            # The kernel takes ENOSYS as "no fsync here" and then reports success for every
            # later one without asking: fsync must be implemented to be able to fail.
            op = "fdatasync" if datasync else "fsync"
            fault("fsync", path, label=op)
            if faults.stalled("fsync", path):
                record("stalled", path, 0, 0, op)
                while faults.stalled("fsync", path):
                    time.sleep(0.001)
            if datasync:
                os.fdatasync(fh)
            else:
                os.fsync(fh)
            record(op, path, 0, 0, "ok")

        def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
            fault("fsyncdir", path)
            fd = os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            record("fsyncdir", path, 0, 0, "ok")

    def watch_parent() -> None:
        # If the test process dies without unmounting, do not leave a mount behind.
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)

    threading.Thread(target=watch_parent, daemon=True).start()
    FUSE(
        Passthrough(),
        str(mountpoint),
        foreground=True,
        fsname="faulty_fs",
        # No attribute or lookup caching: every stat sees the backing file as it is now.
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))


@contextlib.contextmanager
def mounted_or_skip(workdir: Path) -> Iterator[FaultyFs]:
    """``mount_faulty_fs``, or the calling test skipped with the reason FUSE is unavailable."""
    try:
        with mount_faulty_fs(workdir) as mounted:
            yield mounted
    except FuseUnavailableError as exc:
        pytest.skip(f"needs a FUSE mount to make fsync/write fail for real: {exc}")
