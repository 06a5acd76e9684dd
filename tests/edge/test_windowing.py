"""`edge.windowing`: blocks into whole, contiguous windows; a lost block is never spliced over."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.windowing import Windower

FS = 100.0


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=250), min_size=1, max_size=40))
def test_contiguous_blocks_of_any_size_make_every_whole_window_in_order(sizes: list[int]) -> None:
    w = Windower(window_n=64, sample_rate_hz=FS)
    signal = np.arange(sum(sizes), dtype=np.float64)
    windows, at = [], 0
    for n in sizes:
        windows += w.push(signal[at : at + n], 1000.0 + at / FS)
        at += n
    assert len(windows) == len(signal) // 64 and w.gaps == 0
    for k, window in enumerate(windows):
        assert np.array_equal(window.samples, signal[k * 64 : (k + 1) * 64])  # nothing lost
        assert abs(window.start_ts - (1000.0 + k * 64 / FS)) < 1e-9  # first sample's time


def test_a_lost_block_is_a_gap_not_spliced_signal() -> None:
    w = Windower(window_n=30, sample_rate_hz=FS)
    assert w.push(np.ones(20), 0.0) == []
    out = w.push(np.zeros(20), 0.4)  # 0.2 s expected: the block in between was lost
    assert out == [] and w.gaps == 1
    (window,) = w.push(np.zeros(20), 0.6)
    assert window.start_ts == 0.4 and not window.samples.any()  # none of the block before


def test_a_block_arriving_again_out_of_order_is_a_gap() -> None:
    w = Windower(window_n=30, sample_rate_hz=FS)
    w.push(np.ones(20), 0.0)
    w.push(np.ones(20), 0.0)  # the same block again (a server replaying its queue)
    assert w.gaps == 1


def test_a_reset_drops_the_window_in_progress_without_counting_a_gap() -> None:
    w = Windower(window_n=30, sample_rate_hz=FS)
    w.push(np.ones(20), 0.0)
    w.reset()
    (window,) = w.push(np.zeros(40), 5.0)
    assert w.gaps == 0 and window.start_ts == 5.0 and not window.samples.any()
