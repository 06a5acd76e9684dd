"""The stamping line served over OPC UA (asyncua), for tests, demos and bench rigs.

Address space (namespace ``urn:idmz:sim:stamping-line``, string node ids, so a tag map can
name them before the server exists):

=====================================  ==============================================
``ns=2;s=press01.tonnage``             Double, t
``ns=2;s=press01.ram_velocity``        Double, mm/s
``ns=2;s=press01.hydraulic_pressure``  Double, bar
``ns=2;s=press01.shaft_speed``         Double, rpm
``ns=2;s=press01.bearing_de.accel``    Double[block], g, one block per `block_s`
=====================================  ==============================================

The server listens on loopback by default and offers SecurityPolicy None, or, when given a
certificate, Basic256Sha256 SignAndEncrypt only (to exercise the gateway's secure channel). It
is a simulator, never deployed in front of a real machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from asyncua import ua
from asyncua.server.server import Server

from edge.errors import PeerUnavailableError
from edge.plant import StampingLine

NAMESPACE_URI = "urn:idmz:sim:stamping-line"
# The server's ApplicationUri (and its certificate's URI SAN); it takes namespace index 1, so
# the line's namespace stays at index 2 as the tag maps expect.
APPLICATION_URI = "urn:idmz:sim:stamping-line:server"
_log = logging.getLogger("idmz.edge.sim.opcua")

SCALARS = {
    "press01.tonnage": "press_tonnage_t",
    "press01.ram_velocity": "ram_velocity_mm_s",
    "press01.hydraulic_pressure": "hydraulic_pressure_bar",
    "press01.shaft_speed": "shaft_speed_rpm",
}
WAVEFORM = "press01.bearing_de.accel"


def _node_id(name: str, idx: int) -> ua.NodeId:
    return ua.NodeId(ua.String(name), ua.Int16(idx))


class OpcUaPlantServer:
    """One asyncua server publishing `line`'s signals; `start`/`stop` may be called repeatedly
    (a stop followed by a start is a server restart: new sessions, new subscriptions)."""

    def __init__(
        self,
        line: StampingLine,
        *,
        port: int,
        host: str = "127.0.0.1",
        block_s: float = 0.1,
        scalar_interval_s: float = 0.5,
        security: tuple[Path, Path] | None = None,
    ) -> None:
        """`security`: (certificate, private key) of the server; then it offers
        Basic256Sha256 SignAndEncrypt only, else SecurityPolicy None only."""
        self.line = line
        self.security = security
        self.port = port
        self.host = host
        self.block_s = block_s
        self.scalar_interval_s = scalar_interval_s
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self.blocks_written = 0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/idmz/sim"

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("idmz stamping-line simulator")
        await server.set_application_uri(APPLICATION_URI)
        if self.security is None:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            await server.load_certificate(str(self.security[0]))
            await server.load_private_key(str(self.security[1]))
        idx = await server.register_namespace(NAMESPACE_URI)
        press = await server.nodes.objects.add_object(_node_id("press01", idx), "Press01")
        for node_name in SCALARS:
            var = await press.add_variable(
                _node_id(node_name, idx), node_name, 0.0, varianttype=ua.VariantType.Double
            )
            self._nodes[node_name] = var.nodeid
        block = [0.0] * round(self.block_s * self.line.settings.sample_rate_hz)
        wave = await press.add_variable(
            _node_id(WAVEFORM, idx), WAVEFORM, block, varianttype=ua.VariantType.Double
        )
        await wave.write_value_rank(1)
        self._nodes[WAVEFORM] = wave.nodeid
        try:
            await server.start()
        except OSError as exc:
            raise PeerUnavailableError(
                f"OPC UA simulator cannot listen on {self.endpoint}"
            ) from exc
        self._server = server
        self._task = asyncio.create_task(self._produce(), name="opcua-sim-producer")
        _log.info("OPC UA simulator listening on %s", self.endpoint)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def _write(
        self, name: str, value: object, vtype: ua.VariantType, ts: datetime | None = None
    ) -> None:
        if self._server is None:
            raise PeerUnavailableError(f"the OPC UA simulator is stopped; cannot write {name}")
        dv = ua.DataValue(
            ua.Variant(value, vtype),
            SourceTimestamp=ts or datetime.now(UTC),  # type: ignore[arg-type]
        )
        await self._server.write_attribute_value(self._nodes[name], dv)

    async def _produce(self) -> None:
        n = round(self.block_s * self.line.settings.sample_rate_hz)
        start = time.monotonic()
        next_scalar = start
        blocks = 0
        # A waveform block's SourceTimestamp is the acquisition time of its first sample, on
        # the sample clock (t0 + samples / fs), so a reader can tell a lost block from jitter.
        t0 = time.time()
        fs = self.line.settings.sample_rate_hz
        while True:
            # Pace by the wall clock so the block rate matches the sample rate on average.
            first_sample_ts = datetime.fromtimestamp(t0 + blocks * n / fs, UTC)
            blocks += 1
            block = self.line.vibration_block(n)
            await self._write(
                WAVEFORM, block.astype(np.float64).tolist(), ua.VariantType.Double, first_sample_ts
            )
            self.blocks_written += 1
            now = time.monotonic()
            if now >= next_scalar:
                values = self.line.scalars(now)
                for node_name, key in SCALARS.items():
                    await self._write(node_name, float(values[key]), ua.VariantType.Double)
                next_scalar = now + self.scalar_interval_s
            delay = start + blocks * self.block_s - time.monotonic()
            if delay < -5 * self.block_s:  # fell far behind (loaded machine): do not burst
                start = time.monotonic() - blocks * self.block_s
                delay = 0.0
            await asyncio.sleep(max(delay, 0.0))
