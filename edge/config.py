"""The frozen configuration of one gateway, as `idmz` builds it from ``gateway.toml``
(docs/edge.md has the reference). Checked when made: an object that exists is consistent."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import ConfigError
from edge.featurizer import FeaturizerSettings
from edge.outbox import OutboxLimits
from edge.rul import OperatingCondition
from edge.sources import ModbusSource, OpcUaSource
from edge.tagmap import TagSpec
from edge.uplink import UplinkSettings
from pki.identity import DeviceIdentity


@dataclass(frozen=True, slots=True)
class VibrationChannel:
    """A waveform tag to featurize and score, and where its context comes from."""

    tag: str
    featurizer: FeaturizerSettings
    window_s: float = 1.0
    shaft_speed_tag: str | None = None  # rpm; falls back to shaft_rpm when bad or absent
    shaft_rpm: float | None = None
    temperature_tag: str | None = None
    temperature_window_s: float = 300.0
    realarm_interval_s: float = 60.0  # while an anomaly persists, re-raise this often
    load_n: float | None = None  # bearing load; with shaft_rpm, rescales the RUL's life prior

    def __post_init__(self) -> None:
        if self.shaft_speed_tag is None and self.shaft_rpm is None:
            raise ConfigError(f"vibration channel {self.tag}: set shaft_speed_tag or shaft_rpm")
        for key, value in (("shaft_rpm", self.shaft_rpm), ("load_n", self.load_n)):
            if value is not None and not 0 < value < math.inf:
                raise ConfigError(
                    f"vibration channel {self.tag}: {key} must be a finite number > 0; "
                    f"found {value!r}"
                )
        if self.load_n is not None:
            if self.shaft_rpm is None:
                raise ConfigError(f"vibration channel {self.tag}: load_n needs shaft_rpm")
            try:
                OperatingCondition(self.shaft_rpm, self.load_n)
            except ConfigError as exc:  # within the ranges the RUL's rescaling accepts
                raise ConfigError(f"vibration channel {self.tag}: {exc}") from exc
        if not 0.1 <= self.window_s <= 10.0:
            raise ConfigError(f"vibration channel {self.tag}: window_s must be in [0.1, 10]")

    @property
    def condition(self) -> OperatingCondition | None:
        """The machine's nominal speed and load, when both are configured (ADR 0138)."""
        if self.shaft_rpm and self.load_n:
            return OperatingCondition(self.shaft_rpm, self.load_n)
        return None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    identity: DeviceIdentity
    tags: tuple[TagSpec, ...]
    outbox_path: Path
    opcua: tuple[OpcUaSource, ...] = ()
    modbus: tuple[ModbusSource, ...] = ()
    vibration: tuple[VibrationChannel, ...] = ()
    outbox: OutboxLimits = field(default_factory=OutboxLimits)
    uplink: UplinkSettings | None = None
    telemetry_interval_s: float = 1.0
    status_interval_s: float = 10.0
    stale_after_s: float = 10.0
    alarm_log: Path | None = None
    state_dir: Path | None = None  # keeps each machine's commissioning record (edge.commissioning)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        names = [t.name for t in self.tags]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"duplicate tag names: {sorted(dupes)}")
        sources = {s.name for s in self.opcua} | {s.name for s in self.modbus}
        for t in self.tags:
            if t.source not in sources:
                raise ConfigError(f"tag {t.name}: unknown source {t.source!r}")
        by_name = {t.name: t for t in self.tags}
        for ch in self.vibration:
            if ch.tag not in by_name or by_name[ch.tag].kind != "waveform":
                raise ConfigError(f"vibration channel {ch.tag}: not a waveform tag")
