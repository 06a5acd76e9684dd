"""`idmz relay`: run the IDMZ relay appliance, render its broker configs, ask its health."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `relay` command group to the top-level parser."""
    group = sub.add_parser("relay", help=summary, description=summary)
    cmds = group.add_subparsers(dest="relay_command", metavar="SUBCOMMAND", required=True)

    run = cmds.add_parser(
        "run",
        help="run the appliance: managed OT/IT brokers, N workers, health and metrics",
        description=(
            "Run the relay appliance until SIGTERM/^C: start (or connect to) the OT-facing and "
            "IT-facing brokers, N worker processes between them, live revocation, and the "
            "loopback health/metrics endpoint."
        ),
    )
    run.add_argument(
        "--config", required=True, type=Path, help="relay.toml (see deploy/relay.toml)"
    )
    run.set_defaults(func=_run)

    status = cmds.add_parser("status", help="print the running appliance's health (JSON)")
    status.add_argument("--config", required=True, type=Path, help="relay.toml")
    status.set_defaults(func=_status)


def _load(args: argparse.Namespace) -> Any:
    from idmz.home import resolve_home
    from idmz.relay_config import load_relay_config
    from relay.errors import RelayConfigError

    home = resolve_home(args.home)
    path: Path = args.config
    try:
        text = path.read_text()
    except OSError as exc:
        raise RelayConfigError(f"cannot read {path}: {exc}") from exc
    return home, load_relay_config(text, home=home, source=path.resolve())


def _run(args: argparse.Namespace) -> int:
    from audit.log import AuditLog
    from relay.appliance import Appliance

    home, config = _load(args)
    home.ensure()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with AuditLog.open(home.audit_dir, origin=config.worker.audit_origin) as audit:
        appliance = Appliance(config, audit=audit, log_level=args.log_level)
        appliance.start()
        print(
            f"idmz relay: {config.workers} worker(s); OT {config.worker.ot.host}:{config.worker.ot.port} "
            f"-> IT {config.worker.it.host}:{config.worker.it.port}; "
            f"health http://{config.health_host}:{appliance.health_port}/health",
            flush=True,
        )
        try:
            stop.wait()
        finally:
            appliance.stop()
    return 0


def _status(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from relay.errors import UpstreamError

    _home, config = _load(args)
    url = f"http://{config.health_host}:{config.health_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
    except OSError as exc:
        raise UpstreamError(f"the relay's health endpoint {url} did not answer: {exc}") from exc
    print(json.dumps(body, indent=2))
    return 0 if body.get("status") == "ok" else 1
