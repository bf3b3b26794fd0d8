"""Each worker's execution slots are lanes of their own in the run's trace, also once a person has raised
the slot limit mid-run (each worker's share grows past the lanes it started with): no two workers' attempts
on one lane at once (the TUI's timeline, the Chrome trace), and `lanes_used` counts every lane. Runs of
`--workers 2` and of two Ray actors against the simulator over HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from workers_helpers import wait_for_done_cells

import treadle
from treadle.engine.analysis.metrics import measure_run
from treadle.engine.workers.slot_numbers import SlotNumbers
from treadle.sim import SimConfig, SimulatorThread

ROWS, SLOTS, RAISED = 400, 8, 16


def _pipeline(tmp_path: Path, url: str, executor: str) -> Path:
    """Two dependent llm columns; the model's limit above the raised slot limit, so slots are what bound."""
    pd.DataFrame({"id": range(ROWS), "q": [f"q{i}" for i in range(ROWS)]}).to_csv(tmp_path / "s.csv", index=False)
    config = {
        "seed": {"path": "s.csv"},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 4 * RAISED}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
            {"name": "b", "kind": "llm", "model": "m", "prompt": "again {{ a }}"},
        ],
        "run": {"max_parallel": SLOTS, "row_group_size": 20, "workers": 2, "executor": executor},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))
    return path


def _shared_lanes(trace: pd.DataFrame) -> list[tuple[int, int, int]]:
    """(slot, worker, worker) for each two attempts of different workers on one slot at the same time."""
    found = []
    for slot, lane in trace.groupby("slot"):
        starts, ends, workers = (lane[name].to_numpy() for name in ("t_start", "t_end", "worker"))
        meet = (starts[:, None] < ends[None, :]) & (starts[None, :] < ends[:, None])
        for i, j in zip(*np.nonzero(meet & (workers[:, None] < workers[None, :])), strict=True):
            found.append((int(slot), int(workers[i]), int(workers[j])))
    return found


# CI installs the Ray extra (.ci/run): there a missing Ray fails the Ray case, never skips it.
RAY = pytest.param(
    "ray",
    marks=pytest.mark.skipif(
        not os.environ.get("CI") and importlib.util.find_spec("ray") is None, reason="needs pip install 'treadle[ray]'"
    ),
)


@pytest.mark.parametrize("executor", ["local", RAY])
def test_a_raised_slot_limit_gives_each_worker_lanes_of_its_own(tmp_path, executor):
    with SimulatorThread(SimConfig(latency_ms=40, seed=11)) as url:
        controller = treadle.start(_pipeline(tmp_path, url, executor), out=tmp_path / "run", cache="off")
        wait_for_done_cells(controller, 40)  # both workers run, on their 4 slots each
        controller.set_limit("slots", RAISED)
        result = controller.wait(120)
    assert result is not None and result.status == "done"
    assert result.summary["limit_history"]["slots"][-1][1] == RAISED
    trace = pq.read_table(result.run_dir / "trace.parquet").to_pandas()
    local_slots = trace.groupby("worker")["slot"].nunique()
    assert sorted(local_slots.index) == [0, 1] and (local_slots > SLOTS // 2).all()  # each used its raised share
    assert _shared_lanes(trace) == []
    lanes = trace.groupby(["worker", "slot"]).ngroups
    assert lanes == trace["slot"].nunique() <= RAISED + SLOTS
    assert measure_run(result.run_dir).concurrency.lanes_used == lanes


def test_slots_beyond_a_workers_first_share_take_the_next_free_lanes():
    numbers = SlotNumbers()
    numbers.reserve(0, 4)
    numbers.reserve(1, 4)
    assert numbers.lanes(1, np.array([0, 3, 1])).tolist() == [4, 7, 5]
    assert numbers.lanes(0, np.array([5, 2, 4, 5])).tolist() == [9, 2, 8, 9]  # new ones in slot order
    assert numbers.lanes(1, np.array([4, 0])).tolist() == [10, 4]
    assert numbers.lanes(2, np.array([1])).tolist() == [11]  # a worker started later, with no lanes yet
    assert numbers.lanes(0, np.array([], dtype=np.int64)).tolist() == []
    assert numbers.lanes(0, np.array([4, 5])).tolist() == [8, 9]  # a slot keeps its lane
