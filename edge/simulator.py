"""`idmz edge simulate`: the stamping line over OPC UA and Modbus TCP, with injectable faults.

In-process (tests, the demo)::

    sim = PlantSimulator(SimulatorSettings(opcua_port=4840, modbus_port=5020))
    await sim.start()
    sim.inject(Fault.BEARING_OUTER_RACE)        # or sim.replay(recording.samples)
    await sim.restart_opcua()                   # a server restart, for resilience tests
    await sim.stop()

From synchronous code, `SimulatorThread` runs the same thing on its own event loop thread with
the same methods, blocking. Out of process, a control file (JSON, re-read when its mtime
changes) drives it: ``{"fault": "bearing-outer-race"}``, ``{"fault": "none"}``,
``{"replay": "/path/OR007@6_0.mat", "replay_rate_hz": 12000}``, ``{"modbus": "down"|"up"}``,
``{"opcua": "restart"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError
from edge.modbus_simulator import ModbusPlantServer
from edge.opcua_certs import make_application_certificate
from edge.opcua_simulator import APPLICATION_URI, OpcUaPlantServer
from edge.plant import Fault, LineSettings, StampingLine
from edge.recordings import load_recording

_log = logging.getLogger("idmz.edge.sim")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    opcua_port: int = 4840
    modbus_port: int = 5020
    host: str = "127.0.0.1"
    seed: int = 0
    block_s: float = 0.1
    scalar_interval_s: float = 0.5
    line: LineSettings = field(default_factory=LineSettings)
    # A directory with the OPC UA server's cert.pem/key.pem (made there on first use):
    # then the server offers Basic256Sha256 SignAndEncrypt only.
    opcua_security_dir: Path | None = None


class PlantSimulator:
    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.line = StampingLine(seed=settings.seed, settings=settings.line)
        security = None
        if settings.opcua_security_dir is not None:
            d = settings.opcua_security_dir
            if not (d / "key.pem").exists():
                make_application_certificate(
                    d, APPLICATION_URI, "idmz stamping-line simulator", server=True
                )
            security = (d / "cert.pem", d / "key.pem")
        self.opcua = OpcUaPlantServer(
            self.line,
            port=settings.opcua_port,
            host=settings.host,
            block_s=settings.block_s,
            scalar_interval_s=settings.scalar_interval_s,
            security=security,
        )
        self.modbus = ModbusPlantServer(self.line, port=settings.modbus_port, host=settings.host)

    @property
    def opcua_endpoint(self) -> str:
        return self.opcua.endpoint

    async def start(self) -> None:
        await self.opcua.start()
        await self.modbus.start()

    async def stop(self) -> None:
        await self.modbus.stop()
        await self.opcua.stop()

    def inject(self, fault: Fault | str) -> None:
        try:
            f = Fault(fault)
        except ValueError as exc:
            choices = ", ".join(x.value for x in Fault)
            raise ConfigError(f"unknown fault {fault!r}; choose one of {choices}") from exc
        self.line.inject(f, now_s=time.monotonic())
        _log.warning("simulator: fault %s injected", f.value)

    def replay(self, samples: npt.ArrayLike | None) -> None:
        """Serve these samples (g, at the line's sample rate) as the bearing vibration."""
        self.line.replay(None if samples is None else np.asarray(samples, dtype=np.float64))
        _log.warning(
            "simulator: %s", "replaying a recording" if samples is not None else "replay off"
        )

    def replay_file(self, path: Path, *, sample_rate_hz: float) -> None:
        rec = load_recording(
            path, sample_rate_hz=sample_rate_hz, target_rate_hz=self.settings.line.sample_rate_hz
        )
        self.replay(rec.samples)

    async def restart_opcua(self) -> None:
        await self.opcua.stop()
        await self.opcua.start()

    async def stop_modbus(self) -> None:
        await self.modbus.stop()

    async def start_modbus(self) -> None:
        await self.modbus.start()

    async def apply_control(self, control: dict[str, Any]) -> None:
        if "fault" in control:
            self.inject(str(control["fault"]))
        if "replay" in control:
            target = control["replay"]
            if target in (None, "", "off"):
                self.replay(None)
            else:
                rate = float(control.get("replay_rate_hz", self.settings.line.sample_rate_hz))
                self.replay_file(Path(str(target)), sample_rate_hz=rate)
        if control.get("modbus") == "down":
            await self.stop_modbus()
        elif control.get("modbus") == "up" and not self.modbus.running:
            await self.start_modbus()
        if control.get("opcua") == "restart":
            await self.restart_opcua()

    async def watch_control_file(
        self, path: Path, stop: asyncio.Event, interval_s: float = 0.5
    ) -> None:
        seen: int | None = None
        while not stop.is_set():
            try:
                mtime = path.stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime is not None and mtime != seen:
                seen = mtime
                try:
                    await self.apply_control(json.loads(path.read_text() or "{}"))
                except (ValueError, ConfigError) as exc:
                    _log.error("simulator control file %s: %s", path, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)


class SimulatorThread:
    """`PlantSimulator` on its own thread and event loop, with a blocking API."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.sim = PlantSimulator(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="plant-sim", daemon=True
        )

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def start(self) -> None:
        self._thread.start()
        self._call(self.sim.start())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self.sim.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def inject(self, fault: Fault | str) -> None:
        self._loop.call_soon_threadsafe(self.sim.inject, fault)

    def replay_file(self, path: Path, *, sample_rate_hz: float) -> None:
        async def go() -> None:
            self.sim.replay_file(path, sample_rate_hz=sample_rate_hz)

        self._call(go())

    def restart_opcua(self) -> None:
        self._call(self.sim.restart_opcua())

    def stop_modbus(self) -> None:
        self._call(self.sim.stop_modbus())

    def start_modbus(self) -> None:
        self._call(self.sim.start_modbus())
