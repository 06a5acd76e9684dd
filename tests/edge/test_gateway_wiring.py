"""The gateway with its I/O injected (`edge.ports`): readers and uplink from memory, no network.

What the gateway itself does with what its readers report: route it, keep telemetry and
status, wake the uplink for each stored message, and say at once when a reader dies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from edge.config import GatewayConfig
from edge.gateway import Gateway
from edge.outbox import Outbox, OutboxLimits
from edge.ports import Reader, ReadingSink
from edge.sources import OpcUaSource
from edge.tagmap import Quality, Reading, TagSpec
from edge.uplink import UplinkStats
from pki.identity import DeviceIdentity
from policies.envelope import VERSION
from tests.support.ca import GATEWAY_ID

TEMP = TagSpec("temp", "plc", "ns=2;s=t", "degC", "press01", "acme/p/a/l/c/press01", "scalar")


class MemoryReader:
    """Reports its readings, then stays 'connected' until stopped (or fails, if told to)."""

    def __init__(self, name: str, sink: ReadingSink, readings: Sequence[Reading], fail: bool):
        self._name, self._sink, self._readings, self._fail = name, sink, readings, fail
        self.connected = False

    @property
    def name(self) -> str:
        return self._name

    def status(self) -> dict[str, object]:
        return {"kind": "memory", "connected": self.connected}

    async def run(self, stop: asyncio.Event) -> None:
        self.connected = True
        for r in self._readings:
            self._sink(r)
        if self._fail:
            raise RuntimeError("reader bug")
        await stop.wait()
        self.connected = False


class MemoryUplink:
    def __init__(self) -> None:
        self.stats = UplinkStats(connected=True, connections=1)
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def config(tmp: Path) -> GatewayConfig:
    return GatewayConfig(
        identity=DeviceIdentity.parse(GATEWAY_ID),
        tags=(TEMP,),
        outbox_path=tmp / "o.db",
        opcua=(OpcUaSource("plc", "opc.tcp://127.0.0.1:1/unused"),),
        telemetry_interval_s=0.05,
        status_interval_s=0.05,
    )


def run_until(
    gw: Gateway, done: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    """Run the gateway until the messages in its outbox satisfy ``done``; return them."""

    async def main() -> list[dict[str, Any]]:
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                msgs = [
                    json.loads(m.payload) | {"topic": m.topic, "stored_id": m.id}
                    for m in gw.outbox.next_batch(after_seq=0, limit=10_000)
                ]
                if done(msgs) or time.monotonic() > deadline:
                    return msgs
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)

    return asyncio.run(main())


def make(tmp: Path, readings: Sequence[Reading], *, fail: bool = False) -> tuple[Gateway, Any]:
    uplink = MemoryUplink()

    def readers(sink: ReadingSink) -> list[Reader]:
        return [MemoryReader("plc", sink, readings, fail)]

    cfg = config(tmp)
    gw = Gateway(
        cfg, outbox=Outbox.open(cfg.outbox_path, OutboxLimits()), readers=readers, uplink=uplink
    )
    return gw, uplink


def test_injected_readers_feed_telemetry_and_status_without_a_network(tmp_path: Path) -> None:
    now = time.time() + 3600  # never stale while the test runs
    gw, uplink = make(tmp_path, [Reading("temp", 41.5, Quality.GOOD, now)])

    def seen(msgs: list[dict[str, Any]]) -> bool:
        kinds = {m["kind"] for m in msgs}
        return {"telemetry", "status"} <= kinds and any(
            m["kind"] == "telemetry" and m["data"]["tags"][0]["value"] == 41.5 for m in msgs
        )

    msgs = run_until(gw, seen)
    assert seen(msgs), msgs[-3:]
    status = [m for m in msgs if m["kind"] == "status"][-1]
    assert status["data"]["readers"] == {"plc": {"kind": "memory", "connected": True}}
    assert status["data"]["uplink"]["connected"] is True
    for m in msgs:  # every message in the contract's envelope, under the device's path
        assert set(m) - {"topic", "stored_id"} == {"v", "id", "ts", "device", "kind", "data"}
        assert m["v"] == VERSION and m["device"] == GATEWAY_ID and m["id"] == m["stored_id"]
        assert m["topic"] == f"{GATEWAY_ID}/{m['kind']}"
    assert uplink.notified == len(msgs)  # each stored message woke the uplink
    gw.outbox.close()


def test_a_reader_that_dies_is_reported_at_once_and_the_gateway_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="idmz.edge.gateway")
    gw, _ = make(tmp_path, [], fail=True)
    msgs = run_until(gw, lambda ms: sum(m["kind"] == "status" for m in ms) >= 3)
    assert sum(m["kind"] == "status" for m in msgs) >= 3  # status went on after the death
    assert any("reader-plc stopped" in r.getMessage() for r in caplog.records)
    # Never read: the tag is reported bad, not silently left out.
    tags = [m for m in msgs if m["kind"] == "telemetry"][-1]["data"]["tags"]
    assert tags[0]["quality"] == "bad"
    gw.outbox.close()


def test_readings_of_unknown_tags_are_ignored(tmp_path: Path) -> None:
    now = time.time() + 3600
    gw, _ = make(tmp_path, [Reading("not-configured", 1.0, Quality.GOOD, now)])
    msgs = run_until(gw, lambda ms: any(m["kind"] == "telemetry" for m in ms))
    tags = [m for m in msgs if m["kind"] == "telemetry"][-1]["data"]["tags"]
    assert [t["name"] for t in tags] == ["temp"]
    gw.outbox.close()
