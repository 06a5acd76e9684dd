"""Cutting a vibration channel's waveform blocks into analysis windows of a fixed length.

A `Windower` is pure (no clock, no I/O): it is given blocks with the acquisition time of their
first sample and returns every window they complete, with the time of its first sample. A
block that does not start where the previous one ended (a lost block, a server restart)
would splice two stretches of signal into one window and fake impacts, so the window in
progress is dropped and counted as a gap; a bad reading drops it too (`reset`).

>>> import numpy as np
>>> w = Windower(window_n=4, sample_rate_hz=2.0)
>>> [x.start_ts for x in w.push(np.zeros(3), 10.0)], [x.start_ts for x in w.push(np.zeros(3), 11.5)]
([], [10.0])
>>> w.push(np.zeros(3), 20.0), w.gaps      # not where the last block ended: start over
([], 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Window:
    """One analysis window: ``samples`` contiguous samples from ``start_ts`` (POSIX s)."""

    samples: FloatArray
    start_ts: float


class Windower:
    """Blocks in, whole contiguous windows out (the window in progress lives here)."""

    def __init__(self, window_n: int, sample_rate_hz: float) -> None:
        self.window_n = window_n
        self.sample_rate_hz = sample_rate_hz
        self.gaps = 0  # lost or out-of-order blocks: windows restarted
        self._blocks: list[FloatArray] = []
        self._buffered = 0
        self._window_start_ts: float | None = None
        self._next_block_ts: float | None = None  # where the next block should start

    def reset(self) -> None:
        """Drop the window in progress (a bad reading: whatever comes next starts afresh)."""
        self._blocks, self._buffered, self._window_start_ts = [], 0, None
        self._next_block_ts = None

    def push(self, block: FloatArray, ts: float) -> list[Window]:
        """Add a block whose first sample was acquired at ``ts``; return the windows it completes."""
        block_s = block.size / self.sample_rate_hz
        expected = self._next_block_ts
        self._next_block_ts = ts + block_s
        if expected is not None and abs(ts - expected) > block_s / 2:
            self.gaps += 1
            self._blocks, self._buffered, self._window_start_ts = [], 0, None
        if self._window_start_ts is None:
            self._window_start_ts = ts
        self._blocks.append(block)
        self._buffered += block.size
        windows = []
        while self._buffered >= self.window_n:
            data = np.concatenate(self._blocks)
            samples, rest = data[: self.window_n], data[self.window_n :]
            start_ts = self._window_start_ts if self._window_start_ts is not None else ts
            self._blocks = [rest] if rest.size else []
            self._buffered = rest.size
            used = block.size - rest.size  # samples of this block that went into the window
            self._window_start_ts = ts + used / self.sample_rate_hz if rest.size else None
            windows.append(Window(samples, start_ts))
        return windows
