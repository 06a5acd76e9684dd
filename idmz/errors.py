"""Turn errors into exit codes and one clear line on stderr. Only the CLI does this.

Every package's errors derive from one of the categories in ``bedrock.errors`` (ADR 0007), and
the exit code is the category's, chosen by ``isinstance``:

* ``ConfigError`` / ``UsageError``                              -> 2  fix the configuration or call
* ``UpstreamError``                                             -> 3  a dependency failed: retry later
* ``VerificationError`` / ``AccessDeniedError`` / ``CapacityError`` / ``OperationError``
                                                                -> 1  a check failed / was refused
* anything else is a bug: it is re-raised with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from bedrock.errors import exit_code_for

_log = logging.getLogger("idmz")


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
