"""analysis.open_intervals: step_series over a trace read in chunks, sorting a bounded number of
interval ends at a time, gives step_series' own result (times, values, peak, exact)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from treadle.engine.analysis import open_intervals
from treadle.engine.analysis.series import step_series


def chunked(starts: np.ndarray, ends: np.ndarray, cuts: np.ndarray) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(starts=s, ends=e) for s, e in zip(np.split(starts, cuts), np.split(ends, cuts), strict=True)
    ]


@pytest.mark.parametrize("events_at_once", [2, 60, 700, 1 << 19])
@pytest.mark.parametrize("max_points", [10, 300, 2_000])
def test_chunked_step_series_are_step_series(monkeypatch, events_at_once, max_points):
    monkeypatch.setattr(open_intervals, "EVENTS_AT_ONCE", events_at_once)
    rng = np.random.default_rng(events_at_once + max_points)
    for _ in range(20):
        n = int(rng.integers(0, 2_000))
        digits = int(rng.choice([1, 3, 9]))  # few digits: many intervals touch or share times
        starts = np.round(rng.uniform(0, rng.choice([1, 50, 1_000]), n), digits)
        ends = starts + np.round(rng.exponential(rng.choice([0.01, 1, 30]), n), digits)
        cuts = np.sort(rng.integers(0, n + 1, int(rng.integers(0, 6))))
        found = open_intervals.step_series_of(
            chunked(starts, ends, cuts), {"open": lambda c: (c.starts, c.ends)}, max_points
        )
        assert found["open"] == step_series(starts, ends, max_points)


def test_series_without_intervals_and_several_at_once(monkeypatch):
    monkeypatch.setattr(open_intervals, "EVENTS_AT_ONCE", 4)
    starts, ends = np.array([0.0, 1.0, 1.5, 2.0]), np.array([2.0, 3.0, 2.5, 4.0])
    chunks = chunked(starts, ends, np.array([1, 3]))
    found = open_intervals.step_series_of(
        chunks,
        {"all": lambda c: (c.starts, c.ends), "none": lambda c: (c.starts[:0], c.ends[:0])},
    )
    assert found == {"all": step_series(starts, ends), "none": ([0.0], [0], 0, True)}
