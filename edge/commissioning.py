"""A machine's commissioning record: its healthy baseline and worst level, kept across restarts.

The health indicator (`edge.health`) is relative to the level the machine showed when it was
commissioned. Learned again at every gateway start, a restart on a worn machine would take that
wear as "healthy" and hide it, and the RUL's age would restart at zero. So the gateway keeps, per
vibration channel, ``commissioning-<tag>.json`` in its state directory: when the first window
came (``t0``), the baseline (mean log RMS per axis) and the highest smoothed level reached.
Written atomically (`bedrock.files.write_atomic`, 0600) when the baseline is learned and when the
worst level rises; read strictly and bounded. A record that cannot be read refuses the start
(delete it to commission the machine again, e.g. after a bearing was replaced); it is never
silently replaced.

>>> CommissioningRecord(t0_s=1.0, baseline=(0.5,), peak_level=0.1).to_json()
'{"baseline": [0.5], "format": "idmz-commissioning/v1", "peak_level": 0.1, "t0_s": 1.0}'
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from bedrock.files import write_atomic
from edge.errors import ConfigError
from edge.health import HealthIndicator

_log = logging.getLogger("idmz.edge.commissioning")

FORMAT = "idmz-commissioning/v1"
MAX_RECORD_BYTES = 4096
MAX_AXES = 16


@dataclass(frozen=True, slots=True)
class CommissioningRecord:
    t0_s: float  # the first window's time (epoch seconds on a gateway)
    baseline: tuple[float, ...]
    peak_level: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "t0_s": self.t0_s,
                "baseline": list(self.baseline),
                "peak_level": self.peak_level,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> CommissioningRecord:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, want {FORMAT!r}")
            baseline = data["baseline"]
            if not isinstance(baseline, list) or not 1 <= len(baseline) <= MAX_AXES:
                raise ValueError("baseline must be a list of 1-16 numbers")
            rec = cls(
                float(data["t0_s"]), tuple(float(v) for v in baseline), float(data["peak_level"])
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"malformed commissioning record: {exc}") from exc
        values = (rec.t0_s, rec.peak_level, *rec.baseline)
        if not all(math.isfinite(v) for v in values) or rec.peak_level < 0:
            raise ConfigError("commissioning record: values must be finite, peak_level >= 0")
        return rec


def record_path(state_dir: Path, tag: str) -> Path:
    return state_dir / f"commissioning-{tag}.json"


def read_record(path: Path) -> CommissioningRecord | None:
    """The record, None if there is none yet, or `ConfigError` if it cannot be trusted."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the commissioning record {path}: {exc}") from exc
    if len(data) > MAX_RECORD_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_RECORD_BYTES} bytes")
    try:
        return CommissioningRecord.from_json(data.decode("utf-8"))
    except (UnicodeDecodeError, ConfigError) as exc:
        raise ConfigError(
            f"{path}: {exc}; delete it to commission this machine again from its current state"
        ) from exc


def write_record(path: Path, record: CommissioningRecord) -> None:
    write_atomic(path, record.to_json().encode(), mode=0o600)


class CommissioningKeeper:
    """One channel's record: restored into its indicator at start, written as it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saved = read_record(path)

    def restore(self, indicator: HealthIndicator) -> None:
        if self.saved is not None:
            s = self.saved
            indicator.restore(s.t0_s, s.baseline, s.peak_level)
            _log.info("%s: machine commissioned at t0=%.0f, continuing", self.path.name, s.t0_s)

    def keep(self, indicator: HealthIndicator) -> None:
        """Write when the baseline is new or the worst level rose by 0.01 (log ratio): a few
        writes over a machine's life. A failed write is logged; alarms go on."""
        if indicator.baseline is None or indicator.t0_s is None:
            return
        if self.saved is not None and indicator.peak_level < self.saved.peak_level + 0.01:
            return
        record = CommissioningRecord(indicator.t0_s, indicator.baseline, indicator.peak_level)
        try:
            write_record(self.path, record)
        except OSError:
            _log.exception("could not keep the commissioning record %s", self.path)
            return
        self.saved = record
