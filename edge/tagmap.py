"""The tag map: what each raw tag means, and the self-describing value it becomes.

A PLC register or an OPC UA node is just a number; the tag map adds its context (asset,
engineering unit, safe range, ISA-95 asset path) so every published value explains itself:

>>> spec = TagSpec(name="motor_current", source="drive", address="0", unit="A",
...                asset="press01", asset_path="acme/plant1/press/line1/cell2/press01",
...                safe_min=0.0, safe_max=120.0)
>>> r = Reading("motor_current", 42.5, Quality.GOOD, 1700000000.0)
>>> describe(spec, r)["in_safe_range"]
True

Quality codes follow OPC UA Part 4 section 7.39 severities: ``good``, ``uncertain`` (stale or
out of the instrument's range), ``bad`` (no value: source down, node unknown, read failed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError

MODBUS_TYPES = {"float32": 2, "uint16": 1, "int16": 1, "uint32": 2, "int32": 2}


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class TagSpec:
    """One tag. ``source`` names an OPC UA server or Modbus device from the config; ``address``
    is an OPC UA node id (``ns=2;s=...``) or a Modbus holding-register address (0-based)."""

    name: str
    source: str
    address: str
    unit: str
    asset: str
    asset_path: str
    kind: str = "scalar"  # "scalar" or "waveform" (an array block of samples)
    safe_min: float | None = None
    safe_max: float | None = None
    data_type: str = "float32"  # Modbus only
    scale: float = 1.0  # Modbus only: engineering value = raw * scale

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/+#$\0 "):
            raise ConfigError(
                f"tag name must be non-empty without / + # $ or spaces: {self.name!r}"
            )
        if self.kind not in ("scalar", "waveform"):
            raise ConfigError(
                f"tag {self.name}: kind must be scalar or waveform; found {self.kind!r}"
            )
        if self.data_type not in MODBUS_TYPES:
            raise ConfigError(
                f"tag {self.name}: data_type must be one of {sorted(MODBUS_TYPES)}; "
                f"found {self.data_type!r}"
            )
        if (
            self.safe_min is not None
            and self.safe_max is not None
            and self.safe_min > self.safe_max
        ):
            raise ConfigError(
                f"tag {self.name}: safe_min {self.safe_min} > safe_max {self.safe_max}"
            )

    @property
    def register(self) -> int:
        try:
            value = int(self.address, 0)
        except ValueError as exc:
            raise ConfigError(
                f"tag {self.name}: Modbus address must be an integer; found {self.address!r}"
            ) from exc
        if not 0 <= value <= 65535:
            raise ConfigError(f"tag {self.name}: Modbus address out of range: {value}")
        return value

    @property
    def register_count(self) -> int:
        return MODBUS_TYPES[self.data_type]


Value = float | npt.NDArray[np.float64] | None


@dataclass(frozen=True, slots=True)
class Reading:
    """A value as a reader saw it. ``source_ts`` is POSIX seconds from the source (or the
    gateway's clock when the source gives none). ``reason`` explains a bad quality."""

    tag: str
    value: Value
    quality: Quality
    source_ts: float
    reason: str = ""


def all_bad(tags: tuple[TagSpec, ...], reason: str, now: float) -> list[Reading]:
    """What a reader reports for every tag of a source it cannot reach."""
    return [Reading(t.name, None, Quality.BAD, now, reason) for t in tags]


def iso_ts(posix_s: float) -> str:
    return datetime.fromtimestamp(posix_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def describe(spec: TagSpec, reading: Reading) -> dict[str, object]:
    """The self-describing telemetry object (docs/contracts.md section 4)."""
    value = reading.value
    scalar = float(value) if isinstance(value, int | float) else None
    if scalar is not None and not math.isfinite(scalar):
        scalar = None
    out: dict[str, object] = {
        "name": spec.name,
        "value": scalar,
        "unit": spec.unit,
        "quality": reading.quality.value if scalar is not None else Quality.BAD.value,
        "asset": spec.asset,
        "path": spec.asset_path,
        "source_ts": iso_ts(reading.source_ts),
    }
    if spec.safe_min is not None or spec.safe_max is not None:
        out["safe_range"] = [spec.safe_min, spec.safe_max]
        if scalar is not None:
            out["in_safe_range"] = (spec.safe_min is None or scalar >= spec.safe_min) and (
                spec.safe_max is None or scalar <= spec.safe_max
            )
    if reading.reason:
        out["reason"] = reading.reason
    return out


@dataclass(frozen=True, slots=True)
class RegisterBlock:
    """One Modbus read request: a contiguous run of holding registers and the tags in it."""

    start: int
    count: int
    tags: tuple[TagSpec, ...]


def plan_register_blocks(
    tags: tuple[TagSpec, ...], *, max_registers: int = 125
) -> tuple[RegisterBlock, ...]:
    """Group tags into contiguous register runs, at most `max_registers` each (the Modbus
    Application Protocol v1.1b3 section 6.3 limit of 125 registers per read), one request per
    run. Overlapping tags are refused: two tags must not claim the same register."""
    ordered = sorted(tags, key=lambda t: t.register)
    blocks: list[RegisterBlock] = []
    cur: list[TagSpec] = []
    start = end = 0
    for tag in ordered:
        reg, n = tag.register, tag.register_count
        if cur and reg < end:
            raise ConfigError(f"tag {tag.name} overlaps registers of tag {cur[-1].name}")
        if cur and reg == end and reg + n - start <= max_registers:
            cur.append(tag)
            end = reg + n
            continue
        if cur:
            blocks.append(RegisterBlock(start, end - start, tuple(cur)))
        cur, start, end = [tag], reg, reg + n
    if cur:
        blocks.append(RegisterBlock(start, end - start, tuple(cur)))
    return tuple(blocks)
