"""Recorded vibration: loading, resampling, replay through the simulated line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.plant import StampingLine
from edge.recordings import load_recording, resample


def test_decimating_48k_to_12k_keeps_a_tone_and_removes_what_would_alias() -> None:
    t = np.arange(48000) / 48000.0
    keep = np.sin(2 * np.pi * 160.0 * t)  # a BPFI-like line
    alias = np.sin(2 * np.pi * 11000.0 * t)  # above 6 kHz: would fold to 1 kHz at 12 kHz
    y = resample(keep + alias, 48000.0, 12000.0)
    assert y.size == 12000
    w = np.hanning(y.size)  # 1 s: 160 Hz and 1 kHz fall on bins, no scalloping
    spec = np.abs(np.fft.rfft(y * w)) / (w.sum() / 2)
    freqs = np.fft.rfftfreq(y.size, 1 / 12000.0)
    assert spec[np.argmin(np.abs(freqs - 160.0))] == pytest.approx(1.0, rel=0.02)
    assert spec[np.argmin(np.abs(freqs - 1000.0))] < 1e-3


def test_only_integer_decimation_is_offered() -> None:
    with pytest.raises(ConfigError, match="integer factor"):
        resample(np.zeros(100), 44100.0, 12000.0)


def test_a_recording_replays_through_the_line_in_a_loop(tmp_path: Path) -> None:
    samples = np.arange(5000, dtype=np.float64)
    np.save(tmp_path / "rec.npy", samples)
    rec = load_recording(tmp_path / "rec.npy", sample_rate_hz=12000.0, target_rate_hz=12000.0)
    line = StampingLine(seed=1)
    line.replay(rec.samples)
    out = np.concatenate([line.vibration_block(1200) for _ in range(6)])
    assert np.array_equal(out[:5000], samples) and np.array_equal(out[5000:], samples[:2200])


def test_a_file_that_is_not_a_recording_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("1,2,3")
    with pytest.raises(ConfigError, match=r"\.npy or \.mat"):
        load_recording(tmp_path / "x.csv", sample_rate_hz=12000.0, target_rate_hz=12000.0)
