"""The stamping line's drive cabinet served over Modbus TCP (pymodbus 3.16 SimDevice).

Holding registers, big-endian words (high word first), values computed when they are read:

=========  =========  ==========================
address    type       value
=========  =========  ==========================
0-1        float32    motor current, A
2-3        float32    bearing temperature, degC
4-5        float32    hydraulic pressure, bar
6-7        uint32     stroke counter
=========  =========  ==========================

`stop()` drops the device (connections refused), `start()` brings it back.
"""

from __future__ import annotations

import logging
import struct
import time

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.errors import PeerUnavailableError
from edge.plant import StampingLine

_log = logging.getLogger("idmz.edge.sim.modbus")
REGISTER_COUNT = 16


def _float_words(value: float) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def _uint32_words(value: int) -> list[int]:
    hi, lo = struct.unpack(">HH", struct.pack(">I", value & 0xFFFFFFFF))
    return [hi, lo]


class ModbusPlantServer:
    def __init__(self, line: StampingLine, *, port: int, host: str = "127.0.0.1") -> None:
        self.line = line
        self.port = port
        self.host = host
        self._server: ModbusTcpServer | None = None
        self.reads = 0

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        values = self.line.scalars(time.monotonic())
        words = (
            _float_words(values["motor_current_a"])
            + _float_words(values["bearing_temperature_c"])
            + _float_words(values["hydraulic_pressure_bar"])
            + _uint32_words(int(values["stroke_count"]))
        )
        current_registers[0 : len(words)] = words
        self.reads += 1
        return None

    async def start(self) -> None:
        device = SimDevice(
            id=0,
            simdata=[SimData(0, count=REGISTER_COUNT, values=0, datatype=DataType.REGISTERS)],
            action=self._on_access,
        )
        server = ModbusTcpServer(device, address=(self.host, self.port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise PeerUnavailableError(
                f"Modbus simulator cannot listen on {self.host}:{self.port}"
            ) from exc
        self._server = server
        _log.info("Modbus simulator listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None
