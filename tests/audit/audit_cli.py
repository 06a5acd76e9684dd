"""`idmz audit ...` with only the audit command group registered, so these tests exercise
the audit commands and the real error-to-exit-code mapping without depending on every other
command group importing cleanly. Run as ``python -m tests.audit.audit_cli audit ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from idmz.commands import audit
from idmz.errors import run_command


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="idmz")
    parser.add_argument("--home", metavar="DIR")
    sub = parser.add_subparsers(dest="group", required=True)
    audit.register(sub, "tamper-evident audit log")
    args = parser.parse_args(list(argv))
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
