"""The readers survive the field: server restarts, devices that go away, nodes that never were."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from edge.modbus_reader import ModbusReader
from edge.opcua_certs import make_application_certificate
from edge.opcua_reader import OpcUaReader
from edge.simulator import SimulatorSettings, SimulatorThread
from edge.sources import Backoff, ModbusSource, OpcUaSecurity, OpcUaSource
from edge.tagmap import Quality, Reading, TagSpec
from tests.edge.harness import ASSET, simulator_tags
from tests.support.net import free_port, wait_for

pytestmark = pytest.mark.integration
FAST = Backoff(initial_s=0.2, max_s=1.0)


class ReaderThread:
    """Runs one reader on its own loop; collects what it reports."""

    def __init__(self, make: Callable[[Callable[[Reading], None]], Any]) -> None:
        self.readings: list[Reading] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self.reader = make(self._sink)
        self._stop: asyncio.Event | None = None
        self._done: Future[None] = Future()
        threading.Thread(target=self._main, daemon=True).start()

    def _sink(self, r: Reading) -> None:
        with self._lock:
            self.readings.append(r)

    def _main(self) -> None:
        async def run() -> None:
            self._stop = asyncio.Event()
            await self.reader.run(self._stop)

        self._loop.run_until_complete(run())
        self._done.set_result(None)

    def since(self, n: int) -> list[Reading]:
        with self._lock:
            return self.readings[n:]

    def count(self) -> int:
        with self._lock:
            return len(self.readings)

    def stop(self) -> None:
        wait_for(lambda: self._stop is not None, timeout_s=10)
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._done.result(timeout=30)
        self._loop.close()


def good_tags(readings: list[Reading]) -> set[str]:
    return {r.tag for r in readings if r.quality is Quality.GOOD}


@pytest.fixture
def opcua_reader(simulator: SimulatorThread) -> Iterator[ReaderThread]:
    ghost = TagSpec("ghost", "press-plc", "ns=2;s=press01.no_such_node", "", "press01", ASSET)
    tags = (*(t for t in simulator_tags() if t.source == "press-plc"), ghost)
    src = OpcUaSource("press-plc", simulator.sim.opcua_endpoint, backoff=FAST)
    rt = ReaderThread(lambda sink: OpcUaReader(src, tags, sink))
    yield rt
    rt.stop()


def test_an_unknown_node_is_bad_and_the_other_tags_keep_flowing(opcua_reader: ReaderThread) -> None:
    wanted = {
        "press_tonnage",
        "ram_velocity",
        "hydraulic_pressure",
        "shaft_speed",
        "bearing_de_accel",
    }
    wait_for(lambda: wanted <= good_tags(opcua_reader.since(0)), timeout_s=60, what="all tags")
    ghost = [r for r in opcua_reader.since(0) if r.tag == "ghost"]
    assert ghost and all(r.quality is Quality.BAD for r in ghost)
    assert "BadNodeIdUnknown" in ghost[0].reason
    blocks = [
        r for r in opcua_reader.since(0) if r.tag == "bearing_de_accel" and r.value is not None
    ]
    assert blocks[0].value.shape == (1200,)  # type: ignore[union-attr]


def test_opcua_server_restart_rebuilds_session_and_subscriptions_by_itself(
    simulator: SimulatorThread, opcua_reader: ReaderThread
) -> None:
    wait_for(
        lambda: "bearing_de_accel" in good_tags(opcua_reader.since(0)),
        timeout_s=60,
        what="first waveform block",
    )
    mark = opcua_reader.count()
    simulator.restart_opcua()  # returns once the new server listens
    # During the restart every tag is reported bad; then data resumes with no manual action.
    wait_for(lambda: opcua_reader.reader.sessions >= 2, timeout_s=60, what="a second session")
    mark2 = opcua_reader.count()
    wait_for(
        lambda: {"bearing_de_accel", "press_tonnage"} <= good_tags(opcua_reader.since(mark2)),
        timeout_s=60,
        what="values after the restart",
    )
    between = opcua_reader.since(mark)
    assert any(r.quality is Quality.BAD and r.tag == "press_tonnage" for r in between)


def test_modbus_device_gone_is_reported_bad_retried_and_recovered(
    simulator: SimulatorThread,
) -> None:
    tags = tuple(t for t in simulator_tags() if t.source == "drive")
    src = ModbusSource(
        "drive",
        "127.0.0.1",
        simulator.sim.settings.modbus_port,
        poll_interval_s=0.2,
        timeout_s=1.0,
        backoff=FAST,
    )
    rt = ReaderThread(lambda sink: ModbusReader(src, tags, sink))
    try:
        wait_for(lambda: len(good_tags(rt.since(0))) == 4, timeout_s=30, what="modbus values")
        temps = [r.value for r in rt.since(0) if r.tag == "bearing_temperature" and r.value]
        assert 40 < temps[0] < 50  # decoded float32, big-endian words
        simulator.stop_modbus()
        mark = rt.count()
        wait_for(
            lambda: (
                {r.tag for r in rt.since(mark) if r.quality is Quality.BAD}
                == set(t.name for t in tags)
            ),
            timeout_s=30,
            what="all drive tags bad",
        )
        assert not rt.reader.connected
        simulator.start_modbus()
        mark = rt.count()
        wait_for(lambda: len(good_tags(rt.since(mark))) == 4, timeout_s=30, what="recovery")
    finally:
        rt.stop()


def test_modbus_reads_one_request_per_contiguous_block(simulator: SimulatorThread) -> None:
    tags = tuple(t for t in simulator_tags() if t.source == "drive")
    tags = tags[:2] + tags[3:]  # registers 0-3 and 6-7: two blocks
    src = ModbusSource(
        "drive", "127.0.0.1", simulator.sim.settings.modbus_port, poll_interval_s=0.2, backoff=FAST
    )
    rt = ReaderThread(lambda sink: ModbusReader(src, tags, sink))
    try:
        wait_for(lambda: rt.reader.requests >= 10, timeout_s=30, what="10 requests")
        polls = sum(1 for r in rt.since(0) if r.tag == "motor_current")
        assert [(b.start, b.count) for b in rt.reader.blocks] == [(0, 4), (6, 2)]
        assert rt.reader.requests in (2 * polls, 2 * polls + 1)
    finally:
        rt.stop()


def secure_reader(sim: SimulatorThread, tmp: Path, server_cert: Path) -> ReaderThread:
    cert, key = make_application_certificate(
        tmp / "gw-opcua", "urn:acme:gw-01:opcua", "gw-01", server=False
    )
    sec = OpcUaSecurity("Basic256Sha256", "SignAndEncrypt", cert, key, server_cert)
    src = OpcUaSource("press-plc", sim.sim.opcua_endpoint, backoff=FAST, security=sec)
    tags = tuple(t for t in simulator_tags() if t.name in ("press_tonnage", "bearing_de_accel"))
    return ReaderThread(lambda sink: OpcUaReader(src, tags, sink))


@pytest.fixture
def secure_simulator(tmp_path: Path) -> Iterator[SimulatorThread]:
    sim = SimulatorThread(
        SimulatorSettings(
            opcua_port=free_port(),
            modbus_port=free_port(),
            opcua_security_dir=tmp_path / "sim-opcua",
        )
    )
    sim.start()
    yield sim
    sim.stop()


def test_values_flow_over_a_signed_and_encrypted_channel_to_the_pinned_server(
    secure_simulator: SimulatorThread, tmp_path: Path
) -> None:
    rt = secure_reader(secure_simulator, tmp_path, tmp_path / "sim-opcua" / "cert.pem")
    try:
        wait_for(
            lambda: {"press_tonnage", "bearing_de_accel"} <= good_tags(rt.since(0)),
            timeout_s=60,
            what="values over Basic256Sha256 SignAndEncrypt",
        )
    finally:
        rt.stop()


def test_a_server_that_is_not_the_pinned_one_gets_no_session(
    secure_simulator: SimulatorThread, tmp_path: Path
) -> None:
    impostor, _ = make_application_certificate(
        tmp_path / "other", "urn:mallory:plc", "plc", server=True
    )
    rt = secure_reader(secure_simulator, tmp_path, impostor)
    try:
        wait_for(
            lambda: sum(1 for r in rt.since(0) if r.quality is Quality.BAD) >= 4,
            timeout_s=60,
            what="tags reported bad",
        )
        assert rt.reader.sessions == 0
        assert not good_tags(rt.since(0))
    finally:
        rt.stop()


def test_a_blackholed_server_times_out_reports_bad_and_is_retried(tmp_path: Path) -> None:
    """A listener that accepts TCP and never answers (a hung PLC, a half-open firewall):
    the reader must not hang in connect (asyncua #1660)."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    port = hole.getsockname()[1]
    src = OpcUaSource(
        "press-plc",
        f"opc.tcp://127.0.0.1:{port}/x",
        connect_timeout_s=1.0,
        backoff=Backoff(initial_s=0.1, max_s=0.2),
    )
    tags = tuple(t for t in simulator_tags() if t.name == "press_tonnage")
    rt = ReaderThread(lambda sink: OpcUaReader(src, tags, sink))
    try:
        wait_for(
            lambda: sum(1 for r in rt.since(0) if r.quality is Quality.BAD) >= 3,
            timeout_s=30,
            what="three failed attempts, each reported bad",
        )
        assert "press-plc unavailable" in rt.since(0)[0].reason
        assert rt.reader.sessions == 0
    finally:
        rt.stop()
        hole.close()
