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
from collections.abc import Callable, Mapping, Sequence

from idmz.install import install_problem
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
    ("release", "signed models and gateway config pulled by gateways: publish, promote, rollback"),
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


# The global options and their defaults. People type them where they think of them
# (`idmz ca init --home X` as often as `idmz --home X ca init`), so every subcommand accepts
# them too; there they default to SUPPRESS, so an option given before the subcommand is kept
# unless the same option is given again after it (the later one wins, as usual).
GLOBAL_DEFAULTS: dict[str, str | None] = {
    "home": None,
    "log_level": "warning",
    "log_format": "text",
}


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
    _add_global_options(parser, defaults=GLOBAL_DEFAULTS)
    sub = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    for name, summary in COMMAND_GROUPS:
        module = importlib.import_module(f"idmz.commands.{name}")
        module.register(sub, summary)
    _accept_global_options_everywhere(parser)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: Mapping[str, object]) -> None:
    group = parser.add_argument_group("global options (accepted before or after the command)")
    group.add_argument(
        "--home",
        metavar="DIR",
        default=defaults.get("home"),
        help="data directory (default: $IDMZ_HOME or ./idmz-data)",
    )
    group.add_argument(
        "--log-level",
        default=defaults.get("log_level"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (logs go to stderr)",
    )
    group.add_argument(
        "--log-format",
        default=defaults.get("log_format"),
        choices=["text", "json"],
        help="log format",
    )


def _accept_global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:  # argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                own = {opt for a in child._actions for opt in a.option_strings}
                if not own & {"--home", "--log-level", "--log-format"}:
                    suppressed = dict.fromkeys(GLOBAL_DEFAULTS, argparse.SUPPRESS)
                    _add_global_options(child, defaults=suppressed)
                _accept_global_options_everywhere(child)


def main(argv: Sequence[str] | None = None) -> int:
    if problem := install_problem():  # before any command imports a package of ours
        print(problem, file=sys.stderr)
        return 2
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
