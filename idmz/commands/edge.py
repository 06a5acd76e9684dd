"""`idmz edge`: the OT gateway and the plant simulator.

    idmz edge run --config gateway.toml          read, featurize, infer, store, forward
    idmz edge check --config gateway.toml        validate the config and the model signature
    idmz edge simulate --opcua-port 4840 --modbus-port 5020 [--fault bearing-outer-race]
        [--replay OR007@6_0.mat --replay-rate 12000] [--control control.json]
        [--opcua-security DIR]
    idmz edge opcua-cert --out DIR --uri urn:acme:plant1:gw-01   OPC UA client certificate

The gateway opens no listening socket except the optional metrics endpoint, which binds to
loopback only. See docs/edge.md for the configuration reference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.inference import Scorer
    from idmz.gateway_config import LoadedGatewayConfig

_log = logging.getLogger("idmz.edge")


def _load(path: str) -> LoadedGatewayConfig:
    from idmz.gateway_config import load_gateway_config

    return load_gateway_config(Path(path))


def _scorer(loaded: LoadedGatewayConfig, *, record: bool) -> Scorer | None:
    """Verify and load the configured model; refuse to start on a model that does not verify
    or would roll the gateway back (`edge.model_release`). With ``record`` the accepted
    release is remembered, durably, before the model is used."""
    from edge.activation import released_model_paths
    from edge.inference import Scorer
    from edge.model_release import (
        admit_release,
        read_accepted,
        record_accepted,
        release_state_path,
    )
    from edge.model_signing import load_verified_model

    if loaded.model is None:
        _log.warning("no [model] configured: features are published, no anomaly detection")
        return None
    m = loaded.model
    model_file, signature = m.model, m.signature
    if loaded.release is not None:
        pulled, pulled_sig = released_model_paths(loaded.release.state_dir)
        if pulled.exists():  # a model pulled from the release repository is in service
            model_file, signature = pulled, pulled_sig
    verified = load_verified_model(model_file, signature, m.trust, now=datetime.now(UTC))
    state = release_state_path(m.model)
    accepted = admit_release(verified, read_accepted(state), m.trust)
    if record:
        record_accepted(state, accepted)
    _log.warning(
        "model %s verified (release %d%s, sha256 %s..., signer %s)",
        verified.version,
        verified.release,
        f", rollback of release {verified.rollback_of}" if verified.rollback_of else "",
        verified.sha256[:16],
        verified.signer,
    )
    return Scorer.from_verified(verified)


async def _run_until_signal(main: Any, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # asyncio has no signal handlers on some platforms (it raises NotImplementedError
        # there); ^C then still ends the run through KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await main


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.outbox import Outbox
    from idmz.gateway_runtime import build_gateway

    loaded = _load(args.config)
    scorer = _scorer(loaded, record=True)
    cfg = loaded.gateway
    outbox = Outbox.open(cfg.outbox_path, cfg.outbox)

    async def main() -> None:
        stop = asyncio.Event()
        gw = build_gateway(
            cfg,
            outbox=outbox,
            scorer=scorer,
            updates=loaded.release,
            model_trust=loaded.model.trust if loaded.model else None,
            model_path=loaded.model.model if loaded.model else None,
        )
        print(
            f"idmz edge: gateway {cfg.identity.path} running "
            f"(model {scorer.version if scorer else 'none'}, outbox {cfg.outbox_path})",
            file=sys.stderr,
        )
        await _run_until_signal(gw.run(stop), stop)

    try:
        asyncio.run(main())
    finally:
        outbox.close()
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    loaded = _load(args.config)
    scorer = _scorer(loaded, record=False)  # a check changes nothing
    cfg = loaded.gateway
    print(
        json.dumps(
            {
                "identity": cfg.identity.path,
                "tags": len(cfg.tags),
                "opcua": [s.endpoint for s in cfg.opcua],
                "modbus": [f"{s.host}:{s.port}" for s in cfg.modbus],
                "vibration_channels": [c.tag for c in cfg.vibration],
                "uplink": f"{cfg.uplink.host}:{cfg.uplink.port}" if cfg.uplink else None,
                "model": {
                    "version": scorer.version,
                    "sha256": scorer.sha256,
                    "signer": scorer.signer,
                }
                if scorer
                else None,
                "metrics": f"{cfg.metrics_host}:{cfg.metrics_port}" if cfg.metrics_port else None,
            },
            indent=2,
        )
    )
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from edge.simulator import PlantSimulator, SimulatorSettings

    settings = SimulatorSettings(
        opcua_port=args.opcua_port,
        modbus_port=args.modbus_port,
        host=args.host,
        seed=args.seed,
        opcua_security_dir=Path(args.opcua_security) if args.opcua_security else None,
    )
    sim = PlantSimulator(settings)

    async def main() -> None:
        stop = asyncio.Event()
        await sim.start()
        try:
            if args.fault:
                sim.inject(args.fault)
            if args.replay:
                sim.replay_file(Path(args.replay), sample_rate_hz=args.replay_rate)
            print(
                f"idmz edge simulate: OPC UA {sim.opcua_endpoint}, "
                f"Modbus TCP {settings.host}:{settings.modbus_port}",
                file=sys.stderr,
                flush=True,
            )
            watcher = (
                sim.watch_control_file(Path(args.control), stop) if args.control else stop.wait()
            )
            await _run_until_signal(watcher, stop)
        finally:
            await sim.stop()

    asyncio.run(main())
    return 0


def _cmd_opcua_cert(args: argparse.Namespace) -> int:
    from edge.opcua_certs import make_application_certificate

    cert, key = make_application_certificate(
        Path(args.out), args.uri, args.name, server=False, days=args.days
    )
    print(f"idmz edge: wrote {cert} and {key}; add {cert} to the PLC's trusted clients")
    return 0


def register(sub: argparse._SubParsersAction[Any], summary: str) -> None:
    """Add the `edge` command group to the top-level parser."""
    edge = sub.add_parser("edge", help=summary, description=(__doc__ or "").splitlines()[0])
    cmds = edge.add_subparsers(dest="edge_command", metavar="SUBCOMMAND", required=True)

    p = cmds.add_parser("run", help="run the gateway", description="run the gateway")
    p.add_argument("--config", required=True, help="gateway.toml (see docs/edge.md)")
    p.set_defaults(func=_cmd_run)

    p = cmds.add_parser(
        "check",
        help="validate gateway.toml and verify the model signature, then exit",
        description="validate gateway.toml and verify the model signature, then exit",
    )
    p.add_argument("--config", required=True)
    p.set_defaults(func=_cmd_check)

    from_faults = (
        "none",
        "bearing-outer-race",
        "bearing-inner-race",
        "bearing-ball",
        "hydraulic-leak",
    )
    p = cmds.add_parser(
        "simulate",
        help="serve a simulated stamping line over OPC UA and Modbus TCP",
        description="serve a simulated stamping line over OPC UA and Modbus TCP (loopback)",
    )
    p.add_argument("--opcua-port", type=int, default=4840)
    p.add_argument("--modbus-port", type=int, default=5020)
    p.add_argument("--host", default="127.0.0.1", help="listen address (default loopback)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fault", choices=from_faults, help="inject this fault from the start")
    p.add_argument("--replay", help="replay a recorded vibration file (.npy, or .mat with scipy)")
    p.add_argument("--replay-rate", type=float, default=12000.0, help="its sample rate in Hz")
    p.add_argument("--control", help="a JSON control file to watch (fault, replay, modbus, opcua)")
    p.add_argument(
        "--opcua-security",
        metavar="DIR",
        help="offer only Basic256Sha256 SignAndEncrypt, with the server certificate in DIR "
        "(cert.pem/key.pem, made on first use)",
    )
    p.set_defaults(func=_cmd_simulate)

    text = "make the gateway's OPC UA application certificate (cert.pem, key.pem 0600)"
    p = cmds.add_parser("opcua-cert", help=text, description=text)
    p.add_argument("--out", required=True, help="directory to write into")
    p.add_argument("--uri", required=True, help="ApplicationUri, e.g. urn:acme:plant1:gw-01")
    p.add_argument("--name", default="idmz edge gateway", help="certificate common name")
    p.add_argument("--days", type=int, default=730)
    p.set_defaults(func=_cmd_opcua_cert)
