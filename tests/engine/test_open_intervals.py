"""analysis.open_intervals: step_series from interval starts and ends gathered chunk by chunk, sorted
each on their own and walked in blocks, gives step_series' own result (times, values, peak, exact)."""

from __future__ import annotations

import numpy as np
import pytest

from treadle.engine.analysis import open_intervals
from treadle.engine.analysis.open_intervals import Times, step_series_of_sorted
from treadle.engine.analysis.series import step_series


def gathered(values: np.ndarray, cuts: np.ndarray, capacity: int) -> Times:
    times = Times(capacity)
    for piece in np.split(values, cuts):
        times.add(piece)
    return times


@pytest.mark.parametrize("block_events", [1, 2, 60, 700, 1 << 18])
@pytest.mark.parametrize("max_points", [10, 300, 2_000])
def test_step_series_of_sorted_starts_and_ends_is_step_series(monkeypatch, block_events, max_points):
    monkeypatch.setattr(open_intervals, "BLOCK_EVENTS", block_events)
    rng = np.random.default_rng(block_events + max_points)
    for _ in range(20):
        n = int(rng.integers(0, 2_000))
        digits = int(rng.choice([1, 3, 9]))  # few digits: many intervals touch or share times
        starts = np.round(rng.uniform(0, rng.choice([1, 50, 1_000]), n), digits)
        ends = starts + np.round(rng.exponential(rng.choice([0.01, 1, 30]), n), digits)
        cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(0, 6))))
        capacity = int(rng.choice([0, n // 2, n]))  # too small: the array grows
        found = step_series_of_sorted(
            gathered(starts, cuts, capacity).sorted(), gathered(ends, cuts, capacity).sorted(), max_points
        )
        assert found == step_series(starts, ends, max_points)


def test_no_intervals_and_intervals_all_at_one_time():
    assert step_series_of_sorted(Times(5).sorted(), Times(5).sorted(), 10) == ([0.0], [0], 0, True)
    at_two = np.full(3, 2.0)
    assert step_series_of_sorted(at_two, at_two, 10) == step_series(at_two, at_two, 10) == ([0.0, 2.0], [0, 0], 0, True)


def test_times_sorted_are_every_time_added_in_order():
    times = Times(4)
    times.add(np.array([3.0, 1.0]))
    assert times.sorted().tolist() == [1.0, 3.0]
    times.add(np.array([2.0, 0.5, 9.0]))
    assert times.sorted().tolist() == [0.5, 1.0, 2.0, 3.0, 9.0]
