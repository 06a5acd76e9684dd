"""One atomic file write for the whole product (ADR 0007, ADR 0015).

``write_atomic(path, data, mode, durable=...)`` replaces ``path`` so that a reader sees the old
bytes or the new ones, never a mix, and never a planted file or a followed symlink. Durability
is the caller's explicit promise: ``durable=True`` (the default) means the new bytes and the
rename survive a power cut when the call returns; ``durable=False`` skips both fsyncs for a file
that is rewritten soon or rebuilt from other state after a crash (statistics, a cursor that only
causes duplicates when stale, broker configuration rendered at every start). Either way the
temporary file is never wider than 0600, gets exactly ``mode``, and is removed on failure.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``, atomically, with exactly ``mode``.

    The temporary file has a random name and is created with ``O_CREAT|O_EXCL|O_NOFOLLOW``
    (mode 0600): a leftover or planted file, or a symlink, is never opened or followed, and a
    secret is never wider than 0600, not even briefly. ``fchmod`` then sets ``mode`` whatever
    the umask; with ``durable``, fsync; rename over ``path`` (a symlink there is replaced, not
    followed); with ``durable``, fsync of the directory. On failure the temporary file is
    removed and ``path`` is unchanged."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename, a new file or a removal in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
