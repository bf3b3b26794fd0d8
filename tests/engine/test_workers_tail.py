"""The run's tail on `--workers 2`: once no row group is left to hand out, a worker that has written all its
groups idles, and its share of the slots and model limits goes to the worker still running its own."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from workers_helpers import llm_pipeline

import treadle
from treadle.sim import SimConfig, SimulatorThread

SLOTS = 8


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_the_last_groups_run_at_the_runs_limits_not_at_a_workers_share(tmp_path: Path):
    # 3 row groups between 2 workers: the first takes two, the second one, which it finishes first.
    with SimulatorThread(SimConfig(latency_ms=100, seed=3)) as url:
        result = treadle.run(llm_pipeline(tmp_path, url, rows=60, slots=SLOTS), out=tmp_path / "run", cache="off")
    assert result.status == "done"
    trace = pq.read_table(tmp_path / "run" / "trace.parquet").to_pandas()
    first, second = (trace[trace.worker == w] for w in (0, 1))
    assert first.row.nunique() == 40 and second.row.nunique() == 20
    second_done = second.t_end.max()
    tail = first[first.t_end > second_done]
    assert len(tail) >= SLOTS, "the first worker had cells left after the second was done"
    # Each ran with half the slots (4) while both held groups; alone, the first runs with all 8.
    assert _most_at_once(list(zip(first.t_start, first.t_end, strict=True))) > SLOTS // 2
    assert _most_at_once(list(zip(tail.t_start, tail.t_end, strict=True))) > SLOTS // 2
    # The peak sums what the workers held at once: the idle one's busy stretch came before the other's.
    assert SLOTS // 2 < result.summary["limits"]["slots"]["peak"] <= SLOTS
