"""Wiring for ``idmz edge run``: the gateway with its real readers (OPC UA, Modbus TCP) and uplink.

`edge.gateway.Gateway` takes its I/O as arguments (`edge.ports`); this is where the real ones
are built from the configuration, each reader with the tags of its source, in configuration
order (OPC UA sources first). Tests that need the real network path build the gateway here too.

>>> gw = build_gateway(config, outbox=outbox, scorer=scorer)                  # doctest: +SKIP
>>> await gw.run(stop_event)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge.activation import ConfigActivator, ModelActivator, released_config
from edge.alarms import AlarmCallback
from edge.config import GatewayConfig
from edge.gateway import Gateway
from edge.inference import Scorer
from edge.modbus_reader import ModbusReader
from edge.model_release import release_state_path
from edge.model_signing import ModelTrust
from edge.opcua_reader import OpcUaReader
from edge.outbox import Outbox
from edge.ports import Reader, ReaderFactory, ReadingSink
from edge.schedule import Service
from edge.tagmap import TagSpec
from edge.updates import Activator, UpdateAgent, UpdateSettings
from edge.uplink import Uplink
from policies.release import STATUS_SECTION, ReleaseKind


def readers_for(config: GatewayConfig) -> ReaderFactory:
    """A factory of the configured readers, each reporting to the sink it is given."""

    def build(sink: ReadingSink) -> list[Reader]:
        def tags(source: str) -> tuple[TagSpec, ...]:
            return tuple(t for t in config.tags if t.source == source)

        readers: list[Reader] = [OpcUaReader(s, tags(s.name), sink) for s in config.opcua]
        readers += [ModbusReader(s, tags(s.name), sink) for s in config.modbus]
        return readers

    return build


def build_gateway(
    config: GatewayConfig,
    *,
    outbox: Outbox,
    scorer: Scorer | None,
    alarm_callback: AlarmCallback | None = None,
    clock: Callable[[], float] = time.time,
    updates: UpdateSettings | None = None,
    model_trust: ModelTrust | None = None,
    model_path: Path | None = None,
) -> Gateway:
    """The gateway of ``config`` with its real readers and, if configured, its uplink and its
    release updates (``updates``; a model release needs the model's trust and path)."""
    uplink = Uplink(config.uplink, outbox, clock=clock) if config.uplink else None
    gw = Gateway(
        config,
        outbox=outbox,
        scorer=scorer,
        readers=readers_for(config),
        uplink=uplink,
        alarm_callback=alarm_callback,
        clock=clock,
    )
    if updates is not None:
        attach_updates(gw, updates, model_trust, model_path)
    return gw


def attach_updates(
    gw: Gateway, settings: UpdateSettings, trust: ModelTrust | None, model_path: Path | None
) -> UpdateAgent:
    """The update agent as one more service of the gateway, its results in the status."""
    activators: dict[ReleaseKind, Activator] = {}
    if trust is not None and model_path is not None:
        activators[ReleaseKind.MODEL] = ModelActivator(
            settings.state_dir,
            trust,
            release_state_path(model_path),
            gw.use_scorer,
            gw.config.vibration,
            features=gw.last_features.values,
        )
    activators[ReleaseKind.CONFIG] = ConfigActivator(settings.state_dir, gw.apply_settings)
    if (live := released_config(settings.state_dir)) is not None:
        gw.apply_settings(live)  # the configuration release in service before the restart
    agent = UpdateAgent(settings, gw.device, activators)
    gw.services.append(Service("release-updates", agent.run))
    gw.status_sections[STATUS_SECTION] = agent.status
    return agent
