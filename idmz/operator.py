"""The one name every idmz command records for the operator who ran it.

``IDMZ_OPERATOR`` when set (a shared service account can name the person), else the login name
(as `getpass.getuser` finds it: ``LOGNAME``/``USER``/``LNAME``/``USERNAME``, then the
password database), else ``unknown``. Audited as ``operator:<name>``.

    >>> operator_actor({"IDMZ_OPERATOR": "alice"})
    'operator:alice'
"""

from __future__ import annotations

import os
from collections.abc import Mapping

OPERATOR_VAR = "IDMZ_OPERATOR"
UNKNOWN = "unknown"


def operator_name(environ: Mapping[str, str] = os.environ) -> str:
    """The operator's bare name (no ``operator:`` prefix)."""
    name = environ.get(OPERATOR_VAR, "").strip()
    if name:
        return name
    # getpass.getuser's order, but reading the mapping we were given rather than os.environ.
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if environ.get(var, "").strip():
            return environ[var].strip()
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name or UNKNOWN
    except (OSError, KeyError, ImportError):  # no passwd entry (containers with a bare uid)
        return UNKNOWN


def operator_actor(environ: Mapping[str, str] = os.environ) -> str:
    """The audit actor for the operator: ``operator:<name>``."""
    return f"operator:{operator_name(environ)}"
