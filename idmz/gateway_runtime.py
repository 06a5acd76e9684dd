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

from edge.alarms import AlarmCallback
from edge.config import GatewayConfig
from edge.gateway import Gateway
from edge.inference import Scorer
from edge.modbus_reader import ModbusReader
from edge.opcua_reader import OpcUaReader
from edge.outbox import Outbox
from edge.ports import Reader, ReaderFactory, ReadingSink
from edge.tagmap import TagSpec
from edge.uplink import Uplink


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
) -> Gateway:
    """The gateway of ``config`` with its real readers and, if configured, its uplink."""
    uplink = Uplink(config.uplink, outbox, clock=clock) if config.uplink else None
    return Gateway(
        config,
        outbox=outbox,
        scorer=scorer,
        readers=readers_for(config),
        uplink=uplink,
        alarm_callback=alarm_callback,
        clock=clock,
    )
