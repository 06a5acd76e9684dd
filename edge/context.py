"""The scalar tags' latest values, as context for the vibration windows and for telemetry.

The shaft speed a window is analysed at (its tag while good, else the configured rpm), the
bearing temperature's recent history (its slope goes out with every window) and the telemetry
snapshot (a value older than ``stale_after_s`` is reported ``uncertain``, a tag never read
``bad``). Pure: readings and times in, values out.

>>> ctx = TagContext(tags, vibration)                                         # doctest: +SKIP
>>> ctx.update(Reading("shaft_speed", 1797.0, Quality.GOOD, now))              # doctest: +SKIP
>>> ctx.shaft_hz(vibration[0])                                                 # doctest: +SKIP
29.95
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from edge.config import VibrationChannel
from edge.errors import ConfigError
from edge.featurizer import temperature_slope_per_min
from edge.tagmap import Quality, Reading, TagSpec, describe


class TagContext:
    def __init__(self, tags: Sequence[TagSpec], vibration: Sequence[VibrationChannel]) -> None:
        self._tags = tuple(tags)
        self._latest: dict[str, Reading] = {}
        self._temp_windows_s = {
            ch.temperature_tag: ch.temperature_window_s for ch in vibration if ch.temperature_tag
        }
        self._temps: dict[str, deque[tuple[float, float]]] = {
            tag: deque() for tag in self._temp_windows_s
        }

    def update(self, reading: Reading) -> None:
        """A scalar tag's new value (or its loss)."""
        self._latest[reading.tag] = reading
        temps = self._temps.get(reading.tag)
        if (
            temps is not None
            and reading.quality is Quality.GOOD
            and isinstance(reading.value, float)
        ):
            temps.append((reading.source_ts, reading.value))
            oldest = reading.source_ts - self._temp_windows_s[reading.tag]
            while temps and temps[0][0] < oldest:
                temps.popleft()

    def shaft_hz(self, channel: VibrationChannel) -> float:
        """The channel's shaft speed in Hz: its tag while good and positive, else ``shaft_rpm``."""
        if channel.shaft_speed_tag:
            r = self._latest.get(channel.shaft_speed_tag)
            if (
                r is not None
                and r.quality is Quality.GOOD
                and isinstance(r.value, float)
                and r.value > 0
            ):
                return r.value / 60.0
        if channel.shaft_rpm:
            return channel.shaft_rpm / 60.0
        raise ConfigError(f"{channel.tag}: no shaft speed (tag bad and no shaft_rpm)")

    def temperature_slope_per_min(self, channel: VibrationChannel) -> float:
        """The slope of the channel's temperature over its window (0 without a temperature tag)."""
        temps = list(self._temps.get(channel.temperature_tag or "", ()))
        return temperature_slope_per_min([t for t, _ in temps], [v for _, v in temps])

    def telemetry(self, now: float, stale_after_s: float) -> list[dict[str, object]]:
        """Every scalar tag as the telemetry message describes it."""
        out = []
        for spec in self._tags:
            if spec.kind != "scalar":
                continue
            r = self._latest.get(spec.name)
            if r is None:
                r = Reading(spec.name, None, Quality.BAD, now, "no value yet")
            elif r.quality is Quality.GOOD and now - r.source_ts > stale_after_s:
                r = Reading(r.tag, r.value, Quality.UNCERTAIN, r.source_ts, "stale")
            out.append(describe(spec, r))
        return out
