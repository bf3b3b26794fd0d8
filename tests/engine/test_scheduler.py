"""Scheduler behaviour through the RunController: limits, resizing, pause, retry, drop, no double runs."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine.controller import RunController
from treadle.engine.limits import SLOTS
from treadle.engine.run import RunOptions


def pipeline(tmp_path, rows: int, columns: list[dict], **run) -> dict:
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(rows)}).to_csv(seed, index=False)
    return {
        "seed": {"path": str(seed)},
        "columns": columns,
        "run": {"row_group_size": 10, "row_groups_in_flight": 100, "max_parallel": 8, **run},
    }


PROBE_DIR = Path(__file__).parents[1] / "data" / "probe"
GATED = {"name": "a", "kind": "python", "function": "probe_cols:gated"}


def start(tmp_path, config: dict, **options) -> treadle.RunController:
    return treadle.start(config, base_dir=PROBE_DIR, out=tmp_path / "run", **options)


def start_watched(tmp_path, config: dict, **options) -> tuple[RunController, queue.SimpleQueue]:
    """Start a run with an event subscription taken before its first event."""
    loaded = treadle.load(config, base_dir=PROBE_DIR)
    controller = RunController(loaded, RunOptions(out=tmp_path / "run", **options))
    events = controller.subscribe()
    return controller.start(), events


def next_event(events: queue.SimpleQueue, kind: str, timeout: float = 20.0):
    while True:
        event = events.get(timeout=timeout)
        if event.type == kind:
            return event


def test_running_cells_never_exceed_the_slot_limit(tmp_path, probe):
    probe.close_gate()
    controller = start(tmp_path, pipeline(tmp_path, 60, [GATED], max_parallel=8))
    probe.wait_for(lambda p: p.running == 8)
    assert controller.snapshot().cells["running"] == 8
    probe.open_gate()
    result = controller.wait(30)
    assert result.status == "done"
    assert max(probe.levels) == 8
    assert result.summary["limits"]["slots"]["peak"] == 8


def test_raising_a_limit_mid_run_starts_waiting_work_at_once(tmp_path, probe):
    probe.close_gate()
    controller = start(tmp_path, pipeline(tmp_path, 60, [GATED], max_parallel=4))
    probe.wait_for(lambda p: p.running == 4)
    controller.set_limit(SLOTS, 12)
    probe.wait_for(lambda p: p.running == 12)
    assert controller.limits()[SLOTS] == 12
    probe.open_gate()
    assert controller.wait(30).status == "done"


def test_lowering_a_limit_never_cancels_running_cells(tmp_path, probe):
    probe.close_gate()
    controller = start(tmp_path, pipeline(tmp_path, 40, [GATED], max_parallel=10))
    probe.wait_for(lambda p: p.running == 10)
    controller.set_limit(SLOTS, 3)
    snapshot = controller.snapshot()
    assert snapshot.cells["running"] == 10
    assert snapshot.limits[SLOTS].total == 3
    starts_before = len(probe.levels)
    probe.open_gate()
    result = controller.wait(30)
    assert result.status == "done"
    assert max(probe.levels[starts_before:]) <= 3
    assert result.output["a"].tolist() == [i * 10 for i in range(40)]


def test_pause_stops_new_starts_and_resume_continues(tmp_path, probe):
    probe.close_gate()
    controller = start(tmp_path, pipeline(tmp_path, 30, [GATED], max_parallel=4))
    probe.wait_for(lambda p: p.running == 4)
    controller.pause()
    assert probe.release_waiting() == 4
    probe.wait_for(lambda p: p.finished == 4)
    snapshot = controller.snapshot()
    assert snapshot.status == "paused"
    assert snapshot.cells["running"] == 0
    assert snapshot.cells["done"] == 4
    assert len(probe.levels) == 4
    controller.resume()
    probe.wait_for(lambda p: p.running == 4)
    probe.open_gate()
    assert controller.wait(30).status == "done"


def test_failed_cell_blocks_its_row_and_retry_turns_both_back_into_work(tmp_path, probe):
    probe.failing_rows = {3}
    config = pipeline(
        tmp_path,
        20,
        [
            {"name": "a", "kind": "python", "function": "probe_cols:flaky"},
            {"name": "b", "kind": "template", "template": "{{ a }}!"},
        ],
    )
    controller, events = start_watched(tmp_path, config, hold_open=True)
    next_event(events, "idle")
    snapshot = controller.snapshot(rows=[3])
    assert snapshot.window[3] == ("failed", "blocked")
    assert snapshot.cells["done"] == 38
    [failure] = controller.failures()
    assert (failure["row"], failure["column"], failure["error_class"]) == (3, "a", "ValueError")
    probe.failing_rows = set()
    assert controller.retry(cells=[(3, "a")]) == 1
    next_event(events, "idle")
    controller.close()
    result = controller.wait(30)
    assert result.status == "done"
    assert result.output.loc[3, "b"] == "4!"
    assert result.failures == []


def test_failures_are_written_and_the_rest_of_the_run_goes_on(tmp_path, probe):
    probe.failing_rows = {1, 5}
    config = pipeline(
        tmp_path,
        12,
        [
            {"name": "a", "kind": "python", "function": "probe_cols:flaky"},
            {"name": "b", "kind": "template", "template": "{{ a }}!"},
        ],
    )
    result = start(tmp_path, config).wait(30)
    assert result.status == "failed"
    assert result.exit_code == 1
    assert [(f["row"], f["column"], f["attempts"]) for f in result.failures] == [(1, "a", 1), (5, "a", 1)]
    assert result.summary["rows"] == {"total": 12, "done": 10, "failed": 2, "dropped": 0, "unfinished": 0}
    assert result.output["b"].isna().tolist() == [i in (1, 5) for i in range(12)]


def test_drop_removes_a_row_from_output(tmp_path, probe):
    probe.failing_rows = {2}
    config = pipeline(tmp_path, 10, [{"name": "a", "kind": "python", "function": "probe_cols:flaky"}])
    controller, events = start_watched(tmp_path, config, hold_open=True)
    next_event(events, "idle")
    assert controller.drop([2]) == 1
    controller.close()
    result = controller.wait(30)
    assert result.status == "done"
    assert result.output["id"].tolist() == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert result.summary["rows"]["dropped"] == 1
    assert result.failures == []


def test_no_cell_runs_twice_and_sync_functions_run_in_the_python_pool(tmp_path, probe):
    config = pipeline(
        tmp_path,
        500,
        [
            {"name": "a", "kind": "python", "function": "probe_cols:noop"},
            {"name": "b", "kind": "python", "function": "probe_cols:gated_sync", "depends_on": ["a"]},
        ],
        max_parallel=16,
    )
    result = start(tmp_path, config).wait(60)
    assert result.status == "done"
    assert len(probe.starts) == 1000
    assert set(probe.starts.values()) == {1}
    assert {name for name in probe.threads if name.startswith("treadle-python")}
    assert result.output["b"].tolist() == [i * 100 for i in range(500)]


def test_a_cell_over_its_timeout_fails_with_a_clear_message(tmp_path, probe):
    config = pipeline(
        tmp_path,
        2,
        [{"name": "a", "kind": "python", "function": "probe_cols:forever"}],
        timeout_s=0.2,
        retries=1,
        backoff_s=0,
    )
    result = start(tmp_path, config).wait(30)
    assert result.status == "failed"
    assert {(f["message"], f["attempts"]) for f in result.failures} == {("timed out after 0.2 s", 2)}


def test_run_works_inside_a_running_event_loop(tmp_path, probe):
    config = pipeline(tmp_path, 25, [{"name": "a", "kind": "python", "function": "probe_cols:noop"}])

    async def notebook_cell():
        assert asyncio.get_running_loop().is_running()
        return treadle.run(config, base_dir=PROBE_DIR, out=tmp_path / "nb")

    result = asyncio.run(notebook_cell())
    assert result.status == "done"
    assert result.output["a"].tolist() == list(range(25))


@pytest.mark.asyncio
async def test_arun_does_not_block_the_callers_loop(tmp_path, probe):
    probe.close_gate()
    config = pipeline(tmp_path, 5, [GATED])
    task = asyncio.create_task(treadle.arun(config, base_dir=PROBE_DIR, out=tmp_path / "async"))
    await asyncio.to_thread(probe.wait_for, lambda p: p.running == 5)
    assert not task.done()
    probe.open_gate()
    result = await task
    assert result.output["a"].tolist() == [0, 10, 20, 30, 40]
