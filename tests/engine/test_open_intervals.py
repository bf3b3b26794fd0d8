"""analysis.open_intervals: the step series of a trace read twice chunk by chunk (first pass: bounds and
each chunk's earliest event; second: the events walked in time order, the others waiting) are
step_series' own results (times, values, peak, exact), whatever the order of the records and the
cuts of either pass."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from treadle.engine.analysis import open_intervals
from treadle.engine.analysis.open_intervals import OpenIntervals
from treadle.engine.analysis.series import step_series
from treadle.engine.trace_reader import TraceColumns, trace_columns


def records(rng: np.random.Generator, n: int) -> list[dict]:
    """Cells of column `c` (some calling model `m` through ctx: `c:llm`, parent c), with times of few
    digits so that many intervals touch or share times."""
    digits = int(rng.choice([1, 3, 9]))
    ready = np.round(rng.uniform(0, rng.choice([1, 50, 1_000]), n), digits)
    start = ready + np.round(rng.exponential(rng.choice([0.01, 1]), n), digits)
    end = start + np.round(rng.exponential(rng.choice([0.01, 1, 30]), n), digits)
    found = []
    for i in range(n):
        call = i > 0 and rng.random() < 0.3
        record = {"seq": i + 1, "row": i, "attempt": 1, "status": "done", "t_ready": float(ready[i]),
                  "t_start": float(start[i]), "t_end": float(end[i]), "column": "c:llm" if call else "c"}  # fmt: skip
        if call:
            record.update(model="m", parent="c")
        found.append(record)
    return found


def ordered(found: list[dict], order: str, rng: np.random.Generator) -> list[dict]:
    """The records as a trace lists them (by end, with some out of place), shuffled, or latest first."""
    if order == "by_end":
        return sorted(found, key=lambda r: r["t_end"] + float(rng.exponential(0.5)))
    if order == "shuffled":
        return [found[i] for i in rng.permutation(len(found))]
    return sorted(found, key=lambda r: -r["t_start"])


def chunks_of(found: list[dict], rng: np.random.Generator) -> list[TraceColumns]:
    cuts = [0, *sorted(rng.integers(0, len(found) + 1, int(rng.integers(0, 8)))), len(found)]
    return [trace_columns(found[lo:hi]) for lo, hi in itertools.pairwise(cuts)]


def own_cells(tc: TraceColumns) -> np.ndarray:
    return np.array([name == "c" for name in tc.names["column"]], dtype=bool)[tc.codes["column"]]


@pytest.mark.parametrize("order", ["by_end", "shuffled", "latest_first"])
@pytest.mark.parametrize("block_events", [1, 60, 1 << 16])
@pytest.mark.parametrize("max_points", [10, 300, 2_000])
def test_step_series_are_step_series_of_the_intervals(monkeypatch, order, block_events, max_points):
    monkeypatch.setattr(open_intervals, "BLOCK_EVENTS", block_events)
    rng = np.random.default_rng(block_events + max_points + len(order))
    for _ in range(8):
        found = ordered(records(rng, int(rng.integers(1, 1_500))), order, rng)
        intervals = OpenIntervals()
        for tc in chunks_of(found, rng):  # the first pass
            intervals.note(tc, own_cells(tc))
        series = intervals.step_series(chunks_of(found, rng), {"c:llm"}, max_points)  # cut elsewhere

        whole = trace_columns(found)
        own, call = own_cells(whole), ~own_cells(whole)
        assert series["in_flight"] == step_series(whole.t_start[own], whole.t_end[own], max_points)
        assert series["queued"] == step_series(whole.t_ready[own], whole.t_start[own], max_points)
        if call.any():
            assert series[("model", "m")] == step_series(whole.t_start[call], whole.t_end[call], max_points)
        else:
            assert ("model", "m") not in series


def test_no_intervals_and_intervals_all_at_one_time():
    intervals = OpenIntervals()
    assert intervals.step_series([], set(), 10) == {"in_flight": ([0.0], [0], 0, True), "queued": ([0.0], [0], 0, True)}
    at_two = [{"seq": i + 1, "column": "c", "t_ready": 2.0, "t_start": 2.0, "t_end": 2.0} for i in range(3)]
    tc = trace_columns(at_two)
    intervals.note(tc, own_cells(tc))
    series = intervals.step_series([tc], set(), 10)
    assert series["in_flight"] == series["queued"] == ([0.0, 2.0], [0, 0], 0, True)


def traced_peak(found: list[dict], chunk: int) -> int:
    """The most memory (tracemalloc) the second pass held over the chunks it was given, read lazily."""
    intervals = OpenIntervals()
    for lo in range(0, len(found), chunk):
        tc = trace_columns(found[lo : lo + chunk])
        intervals.note(tc, own_cells(tc))
    tracemalloc.start()
    try:
        intervals.step_series((trace_columns(found[lo : lo + chunk]) for lo in range(0, len(found), chunk)), set(), 200)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_what_waits_is_about_the_intervals_running_not_the_trace():
    """50,000 intervals 1 s long, one every 1 ms (1,000 open at a time): listed by end, the second pass
    holds a chunk and what is open around it; listed shuffled, every time waits (1.6 MB of them)."""
    n = 50_000
    starts = [i / 1e3 for i in range(n)]
    found = [{"seq": i + 1, "column": "c", "t_ready": s, "t_start": s, "t_end": s + 1.0} for i, s in enumerate(starts)]
    by_end = traced_peak(found, 500)
    shuffled = traced_peak([found[i] for i in np.random.default_rng(0).permutation(n)], 500)
    assert shuffled > 4 * n * 8
    assert by_end < 400_000
