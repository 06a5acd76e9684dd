"""Where idmz keeps its state, and how secrets are read. The only module that reads the
environment for settings shared by every command.

Every command finds its state under one data directory: ``--home DIR``, else ``IDMZ_HOME``,
else ``./idmz-data``. Secrets come from a file with restrictive permissions (``*_FILE``) or from
the environment; they are never logged.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import bedrock.errors as category

DEFAULT_HOME = Path("idmz-data")


class SettingsError(category.ConfigError):
    """A setting is missing, unsafe or malformed. Fix the configuration and start again."""


@dataclass(frozen=True, slots=True)
class Home:
    """The data directory and the standard places inside it."""

    root: Path

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def provisioning_dir(self) -> Path:
        return self.root / "provisioning"

    @property
    def policy_dir(self) -> Path:
        return self.root / "policy"

    @property
    def relay_dir(self) -> Path:
        return self.root / "relay"

    @property
    def edge_dir(self) -> Path:
        return self.root / "edge"

    def ensure(self) -> Home:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self


def resolve_home(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Home:
    """``--home`` wins over ``IDMZ_HOME``, which wins over ``./idmz-data``."""
    if cli_value:
        return Home(Path(cli_value))
    if environ.get("IDMZ_HOME"):
        return Home(Path(environ["IDMZ_HOME"]))
    return Home(DEFAULT_HOME)


def read_secret_file(path: Path) -> bytes:
    """Read a secret from a file that only its owner can read (mode 0600 or stricter)."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise SettingsError(f"secret file {path} does not exist") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"secret file {path} must be readable by its owner only (mode 0600); "
            f"found mode {stat.S_IMODE(st.st_mode):04o}"
        )
    value = path.read_bytes().strip()
    if not value:
        raise SettingsError(f"secret file {path} is empty")
    return value


def write_secret_file(path: Path, value: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
        fh.flush()
        os.fsync(fh.fileno())


def load_secret(
    name: str, *, environ: Mapping[str, str] = os.environ, default_file: Path | None = None
) -> bytes | None:
    """Read secret ``name`` from ``<name>_FILE`` (a 0600 file), else ``<name>``, else
    ``default_file`` if it exists. Returns None when none is set."""
    file_var = f"{name}_FILE"
    if environ.get(file_var):
        return read_secret_file(Path(environ[file_var]))
    if environ.get(name):
        return environ[name].encode()
    if default_file is not None and default_file.exists():
        return read_secret_file(default_file)
    return None


def generate_secret_file(path: Path, nbytes: int = 32) -> bytes:
    """Generate a random secret into a new 0600 file and return it."""
    value = secrets.token_urlsafe(nbytes).encode()
    write_secret_file(path, value)
    return value
