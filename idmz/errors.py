"""Turn errors into exit codes and one clear line on stderr. Only the CLI does this.

Every package raises its own error tree (``pki.errors``, ``audit.errors``, ...). The exit code is
chosen by what the caller does next, read from the class names in the error's MRO:

* ``*ConfigError`` / ``SettingsError`` / ``*UsageError``    -> 2  fix the configuration or call
* ``*UpstreamError`` / ``*UnavailableError``                 -> 3  a dependency failed: retry later
* any other error from an idmz package                       -> 1  a check failed / was refused
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

_OUR_PACKAGES = ("idmz", "pki", "audit", "policies", "provisioning", "relay", "edge")
_log = logging.getLogger("idmz")


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code for an idmz error, or None for an error that is not ours (a bug)."""
    names = [cls.__name__ for cls in type(exc).__mro__]
    if type(exc).__module__.split(".")[0] not in _OUR_PACKAGES:
        return None
    if any(n.endswith(("ConfigError", "UsageError")) or n == "SettingsError" for n in names):
        return 2
    if any(n.endswith(("UpstreamError", "UnavailableError")) for n in names):
        return 3
    return 1


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return func(args)
    except KeyboardInterrupt:
        print("idmz: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        code = exit_code_for(exc)
        if code is None:
            raise
        _log.debug("command failed", exc_info=True)
        print(f"idmz: error: {exc}", file=sys.stderr)
        return code
