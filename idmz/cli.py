"""The ``idmz`` command line. Each command group lives in ``idmz/commands/<group>.py`` and
exposes ``register(subparsers)``; heavy libraries are imported inside the command functions so
that ``idmz --help`` stays fast.

Exit codes: 0 success; 1 a check failed (verification, policy check, demo step); 2 usage or
configuration error; 3 an upstream dependency (broker, Vault, server) failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from idmz.logs import configure_logging

# (module, one-line summary), in the order --help lists them.
COMMAND_GROUPS: tuple[tuple[str, str], ...] = (
    ("ca", "certificate authority: init, issue, revoke, CRL, fingerprint"),
    ("provisioning", "enrollment service, devices, tokens, revocation, expiry alerts"),
    ("enroll", "first-boot enrollment and renewal on a gateway (enroll, renew)"),
    ("policy", "segmentation policy: validate, render broker configs, check a deployment"),
    ("relay", "the IDMZ relay appliance"),
    ("edge", "the OT gateway and the plant simulator"),
    ("model", "train and sign the edge anomaly model"),
    ("audit", "tamper-evident audit log: append, verify, proofs, witness, reports"),
    ("demo", "plant in a box: the whole chain on this machine"),
)

CommandFunc = Callable[[argparse.Namespace], int]

EPILOG = """\
state lives under one data directory: --home DIR, else $IDMZ_HOME, else ./idmz-data

quick start:
  idmz demo                       the whole chain on loopback, explained step by step
  idmz ca init                    create a root and an issuing CA
  idmz provisioning serve         run the enrollment service
  idmz enroll --server URL --token T --ca-fingerprint SHA256 --out DIR

exit codes: 0 ok, 1 a check failed, 2 usage/configuration error, 3 upstream failure
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idmz",
        description=(
            "idmz: an IDMZ relay and device identity service for factories. Plant data flows "
            "one way, OT -> IDMZ -> IT, from devices with per-device X.509 identities, checked "
            "against policy and recorded in a tamper-evident audit log."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--home", metavar="DIR", help="data directory (default: $IDMZ_HOME or ./idmz-data)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (logs go to stderr)",
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"], help="log format")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name, summary in COMMAND_GROUPS:
        module = importlib.import_module(f"idmz.commands.{name}")
        module.register(sub, summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    func: CommandFunc | None = getattr(args, "func", None)
    if func is None:
        parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
        return 2
    from idmz.errors import run_command

    return run_command(func, args)


if __name__ == "__main__":
    sys.exit(main())
