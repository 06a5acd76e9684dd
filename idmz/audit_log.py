"""The one rule every idmz command uses to name and open the audit log of a home.

A log never changes its origin (its checkpoints are signed under it and auditors pin it), so
whichever part opens it first must pick the same name every other part would pick:

1. the origin of the existing log under ``<home>/audit``, if there is one;
2. else ``IDMZ_AUDIT_ORIGIN``;
3. else ``<hostname>/idmz-audit``.

    >>> with open_audit_log(home, background_checkpoints=False) as log:
    ...     log.record(event)

The relay's loader can call `audit_origin(home, environ)` for the same name.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.keys import existing_origin
from audit.log import AuditLog
from idmz.home import Home

ORIGIN_VAR = "IDMZ_AUDIT_ORIGIN"


def default_origin() -> str:
    return f"{socket.gethostname()}/idmz-audit"


def audit_origin(
    home: Home | Path, environ: Mapping[str, str] = os.environ, *, directory: Path | None = None
) -> str:
    """The origin of the audit log of ``home`` (or of ``directory`` when given): the existing
    log's, else ``IDMZ_AUDIT_ORIGIN``, else ``<hostname>/idmz-audit``."""
    log_dir = directory or (home.audit_dir if isinstance(home, Home) else Path(home) / "audit")
    return existing_origin(log_dir) or environ.get(ORIGIN_VAR, "").strip() or default_origin()


def open_audit_log(
    home: Home | Path,
    *,
    environ: Mapping[str, str] = os.environ,
    directory: Path | None = None,
    origin: str | None = None,
    **kwargs: Any,
) -> AuditLog:
    """Open (creating if needed) the audit log of ``home`` under the shared origin rule.
    ``origin`` is an explicit operator choice (``--origin``); a log that already has another
    origin refuses it (`audit.errors.AuditConfigError`). ``kwargs`` go to `AuditLog.open`."""
    log_dir = directory or (home.audit_dir if isinstance(home, Home) else Path(home) / "audit")
    name = origin or audit_origin(home, environ, directory=log_dir)
    return AuditLog.open(log_dir, origin=name, **kwargs)
