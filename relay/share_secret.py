"""The relay's share-group secret (ADR 0034): the relay's workers subscribe on OT with a group
name derived from it (`policies.broker_config.relay_subscription`), so a gateway that knows the
policy's public group name cannot join the relay's group and swallow its share of the messages.

The secret lives in a file: one named in relay.toml (``share_secret``), else
``<state_dir>/share-secret``, created on first use with 32 random bytes (hex) and mode 0600.
Every worker of one relay reads the same file, hence joins the same group, across restarts (a
new secret would leave the old group in the persistent sessions and double every message). It
is never logged, and neither is the group name derived from it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from policies.broker_config import MIN_SHARE_SECRET_BYTES
from relay.errors import RelayConfigError

GENERATED_BYTES = 32


def load_share_secret(path: Path) -> bytes:
    """The secret in ``path`` (surrounding whitespace ignored). The file must be readable by
    its owner only and hold at least 16 bytes."""
    try:
        st = path.stat()
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise RelayConfigError(f"cannot read the relay's share secret {path}: {exc}") from exc
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise RelayConfigError(
            f"the relay's share secret {path} is readable by others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
        )
    if len(secret) < MIN_SHARE_SECRET_BYTES:
        raise RelayConfigError(
            f"the relay's share secret {path} holds {len(secret)} bytes; "
            f"at least {MIN_SHARE_SECRET_BYTES} are needed"
        )
    return secret


def ensure_share_secret(path: Path) -> bytes:
    """`load_share_secret`, creating the file first if it does not exist. Creation is atomic
    (written to a private temporary file, then hard-linked into place), so workers starting at
    the same moment all end up with the one secret that won."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_hex(GENERATED_BYTES).encode() + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another worker was first: use its
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return load_share_secret(path)
