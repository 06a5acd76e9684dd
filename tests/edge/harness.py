"""Run a real gateway in a thread, build configs for the simulator, collect MQTT messages with an
independent client (mosquitto_sub, `tests.support.mqtt`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from edge.config import GatewayConfig, VibrationChannel
from edge.featurizer import FeaturizerSettings
from edge.gateway import Gateway
from edge.inference import Scorer
from edge.model_signing import ModelTrust, sign_model, verify_model
from edge.outbox import Outbox, OutboxLimits
from edge.plant import LineSettings
from edge.simulator import SimulatorThread
from edge.sources import Backoff, ModbusSource, OpcUaSource
from edge.tagmap import TagSpec
from edge.training import WindowPlan, simulator_recording, train
from edge.uplink import UplinkSettings
from idmz.gateway_runtime import build_gateway
from pki.identity import DeviceIdentity
from tests.support.ca import GATEWAY_ID, ClientCredentials, Issued, ProductCA
from tests.support.mqtt import WITH_PROPERTIES, Endpoint, Subscriber

T = TypeVar("T")
ASSET = "acme/plant1/press/line1/cell2/press01"


def simulator_tags() -> tuple[TagSpec, ...]:
    def opc(name: str, node: str, unit: str, lo: float, hi: float) -> TagSpec:
        return TagSpec(
            name, "press-plc", f"ns=2;s={node}", unit, "press01", ASSET, "scalar", lo, hi
        )

    def mb(name: str, reg: int, unit: str, dtype: str = "float32") -> TagSpec:
        return TagSpec(name, "drive", str(reg), unit, "press01", ASSET, data_type=dtype)

    return (
        opc("press_tonnage", "press01.tonnage", "t", 0, 300),
        opc("ram_velocity", "press01.ram_velocity", "mm/s", -400, 400),
        opc("hydraulic_pressure", "press01.hydraulic_pressure", "bar", 150, 220),
        opc("shaft_speed", "press01.shaft_speed", "rpm", 0, 3000),
        TagSpec(
            "bearing_de_accel",
            "press-plc",
            "ns=2;s=press01.bearing_de.accel",
            "g",
            "press01",
            ASSET,
            kind="waveform",
        ),
        mb("motor_current", 0, "A"),
        mb("bearing_temperature", 2, "degC"),
        mb("hydraulic_pressure_drive", 4, "bar"),
        mb("stroke_count", 6, "", "uint32"),
    )


def simulator_config(
    sim: SimulatorThread,
    state: Path,
    *,
    uplink: UplinkSettings | None = None,
    tags: tuple[TagSpec, ...] | None = None,
    outbox: OutboxLimits | None = None,
    telemetry_interval_s: float = 0.5,
) -> GatewayConfig:
    fast = Backoff(initial_s=0.2, max_s=1.0)
    return GatewayConfig(
        identity=DeviceIdentity.parse(GATEWAY_ID),
        tags=tags or simulator_tags(),
        outbox_path=state / "outbox.db",
        opcua=(
            OpcUaSource("press-plc", sim.sim.opcua_endpoint, backoff=fast, connect_timeout_s=10.0),
        ),
        modbus=(
            ModbusSource(
                "drive",
                "127.0.0.1",
                sim.sim.settings.modbus_port,
                poll_interval_s=0.25,
                timeout_s=1.0,
                backoff=fast,
            ),
        ),
        vibration=(
            VibrationChannel(
                tag="bearing_de_accel",
                featurizer=FeaturizerSettings(sample_rate_hz=12000.0),
                window_s=1.0,
                shaft_speed_tag="shaft_speed",
                shaft_rpm=1797.0,
                temperature_tag="bearing_temperature",
                realarm_interval_s=5.0,
            ),
        ),
        outbox=outbox or OutboxLimits(),
        uplink=uplink,
        telemetry_interval_s=telemetry_interval_s,
        status_interval_s=2.0,
        alarm_log=state / "alarms.jsonl",
    )


def train_simulator_model(version: str = "sim-test-1") -> bytes:
    rec = simulator_recording(60.0, seed=1, settings=LineSettings())
    fitted = train(
        [rec],
        FeaturizerSettings(sample_rate_hz=12000.0),
        WindowPlan(1.0, 0.25),
        version=version,
        default_shaft_rpm=1797.0,
    )
    return fitted.to_onnx().SerializeToString()


def signed_scorer(test_ca: ProductCA, model_bytes: bytes, signer: Issued | None = None) -> Scorer:
    signer = signer or test_ca.signer()
    now = datetime.now(UTC)
    bundle = sign_model(
        model_bytes,
        artifact="model.onnx",
        signer_cert_pem=signer.cert_pem,
        signer_key_pem=signer.key_pem,
        chain_pem=signer.chain_pem,
        now=now,
    )
    from cryptography import x509

    trust = ModelTrust(
        roots=(test_ca.ca.root_certificate,),
        crls=(x509.load_pem_x509_crl(test_ca.ca.current_crl(now=now).pem),),
    )
    return Scorer.from_verified(verify_model(model_bytes, bundle, trust, now=now))


class GatewayThread:
    """A real `Gateway` on its own event loop thread."""

    def __init__(self, config: GatewayConfig, *, scorer: Scorer | None = None) -> None:
        self.outbox = Outbox.open(config.outbox_path, config.outbox)
        self.alarms: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self.gateway: Gateway | None = None
        self._config = config
        self._scorer = scorer
        self._stop: asyncio.Event | None = None
        self._done: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name="gateway", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def run() -> None:
            self._stop = asyncio.Event()
            self.gateway = build_gateway(
                self._config,
                outbox=self.outbox,
                scorer=self._scorer,
                alarm_callback=lambda e: self.alarms.append(dict(e)),
            )
            await self.gateway.run(self._stop)

        try:
            self._loop.run_until_complete(run())
            self._done.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self._done.set_exception(exc)

    def start(self) -> GatewayThread:
        self._thread.start()
        return self

    def call(self, fn: Callable[[Gateway], T]) -> T:
        """Run `fn(gateway)` on the gateway's loop (thread-safe reads of its state)."""
        while self.gateway is None:
            if self._done.done():
                self._done.result()
            threading.Event().wait(0.01)
        gw = self.gateway

        async def go() -> T:
            return fn(gw)

        return asyncio.run_coroutine_threadsafe(go(), self._loop).result(30)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        self._loop.close()
        self.outbox.close()
        if self._done.done():
            self._done.result()


def start_collector(
    test_ca: ProductCA,
    port: int,
    workdir: Path,
    *,
    client_id: str = "collector",
    persistent: bool = False,
) -> Subscriber:
    """An independent MQTT 5 client over mTLS on everything under ``acme/``: one
    `tests.support.mqtt.Record` per message (``.records()``)."""
    issued = test_ca.device("acme/plant1/it/x/y/collector")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "c.pem").write_bytes(issued.cert_pem + issued.chain_pem)
    (workdir / "c.key").write_bytes(issued.key_pem)
    (workdir / "ca.pem").write_bytes(test_ca.root_pem)
    creds = ClientCredentials("collector", workdir / "c.pem", workdir / "c.key", issued.serial)
    return Subscriber(
        Endpoint(port, workdir / "ca.pem"),
        creds,
        "acme/#",
        workdir / "messages.tsv",
        client_id=client_id,
        persistent=persistent,
        line_format=WITH_PROPERTIES,
    )


class LoopThread:
    """Run `make_coro(stop_event)` on its own event loop thread until `stop()`."""

    def __init__(self, make_coro: Callable[[asyncio.Event], Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._make = make_coro
        self._done: Future[None] = Future()
        self._ready = threading.Event()
        threading.Thread(target=self._main, daemon=True).start()
        self._ready.wait(10)

    def _main(self) -> None:
        async def run() -> None:
            self._stop = asyncio.Event()
            self._ready.set()
            await self._make(self._stop)

        try:
            self._loop.run_until_complete(run())
            self._done.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self._done.set_exception(exc)

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._done.result(timeout=30)
        self._loop.close()
