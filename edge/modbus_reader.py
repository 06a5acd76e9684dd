"""Modbus TCP reader (pymodbus behind this one module).

Polls each contiguous register block with one request (`tagmap.plan_register_blocks`),
sequentially on one connection (Modbus TCP servers serve a connection in order; concurrent
requests time out, pymodbus #1784). When the device goes away every tag of it is reported with
``bad`` quality once per poll, and the reader reconnects with capped exponential backoff and
jitter; pymodbus's own reconnect is not used (its semantics changed between releases). A block
the device refuses (exception response, e.g. illegal address) makes only that block's tags bad.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections.abc import Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.errors import PeerUnavailableError, UpstreamError
from edge.ports import ReadingSink, SourceReader
from edge.sources import ModbusSource
from edge.tagmap import (
    Quality,
    Reading,
    RegisterBlock,
    TagSpec,
    plan_register_blocks,
)

_log = logging.getLogger("idmz.edge.modbus")


def decode(tag: TagSpec, words: list[int]) -> float:
    """Big-endian words (high word first), as most PLCs and the simulator lay them out."""
    raw = struct.pack(f">{len(words)}H", *words)
    fmt = {"float32": ">f", "uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i"}
    return float(struct.unpack(fmt[tag.data_type], raw)[0]) * tag.scale


class ModbusReader(SourceReader[ModbusSource]):
    def __init__(
        self,
        source: ModbusSource,
        tags: tuple[TagSpec, ...],
        sink: ReadingSink,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(source, tags, sink, clock=clock)
        self.blocks: tuple[RegisterBlock, ...] = plan_register_blocks(tags)
        self._client: AsyncModbusTcpClient | None = None
        self.connected = False
        self.reconnects = 0
        self.requests = 0

    def status(self) -> dict[str, object]:
        """This source in the gateway's status message."""
        return {"kind": "modbus", "connected": self.connected}

    async def _connect(self) -> None:
        s = self.source
        client = AsyncModbusTcpClient(
            s.host,
            port=s.port,
            timeout=s.timeout_s,
            retries=0,
            reconnect_delay=0.0,
            name=f"idmz-{s.name}",
        )
        try:
            ok = await asyncio.wait_for(client.connect(), timeout=s.timeout_s + 1.0)
        except (OSError, TimeoutError, ModbusException) as exc:
            client.close()
            raise PeerUnavailableError(
                f"Modbus device {s.name} at {s.host}:{s.port} unreachable: {exc}"
            ) from exc
        if not ok:
            client.close()
            raise PeerUnavailableError(f"Modbus device {s.name} at {s.host}:{s.port} refused")
        self._client = client
        self.connected = True

    def _disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self.connected = False

    async def _read_block(self, block: RegisterBlock) -> None:
        s = self.source
        if self._client is None:
            raise PeerUnavailableError(f"Modbus device {s.name} is not connected")
        now = self._clock()
        try:
            rr = await self._client.read_holding_registers(
                block.start, count=block.count, device_id=s.unit_id
            )
        except (OSError, TimeoutError, ModbusException) as exc:
            raise PeerUnavailableError(
                f"Modbus device {s.name}: read of registers {block.start}+{block.count} "
                f"failed: {exc}"
            ) from exc
        self.requests += 1
        if rr.isError() or len(rr.registers) < block.count:
            reason = f"device refused registers {block.start}+{block.count}: {rr}"
            for tag in block.tags:
                self._sink(Reading(tag.name, None, Quality.BAD, now, reason))
            return
        for tag in block.tags:
            off = tag.register - block.start
            value = decode(tag, list(rr.registers[off : off + tag.register_count]))
            self._sink(Reading(tag.name, value, Quality.GOOD, now))

    async def poll_once(self) -> None:
        """Read every block once; raises `UpstreamError` when the device is gone."""
        if self._client is None:
            await self._connect()
        for block in self.blocks:
            await self._read_block(block)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set, surviving device loss."""
        attempt = 0
        rng = random.Random()  # noqa: S311 - jitter, not security
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self.poll_once()
                    attempt = 0
                    delay = self.source.poll_interval_s - (time.monotonic() - started)
                except UpstreamError as exc:
                    if self.connected or attempt == 0:
                        _log.warning("%s; tags reported bad, reconnecting", exc)
                    self._disconnect()
                    self._report_all_bad(str(exc))
                    delay = self.source.backoff.delay_s(attempt, rng.uniform(-1, 1))
                    delay = min(delay, max(self.source.poll_interval_s, delay))
                    attempt += 1
                    self.reconnects += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=max(delay, 0.0))
        finally:
            self._disconnect()
