"""RunController, the door UIs and the API use: cancel with its grace period, abort, close, limits
checked before they reach the run, retries by row or of every failure, snapshots, commands after the
run has ended, resuming from a run directory. Real runs of probe columns (tests/data/probe), whose
cells a test can hold and release."""

from __future__ import annotations

import queue
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine.controller import RunController
from treadle.engine.errors import ConfigError
from treadle.engine.events import LimitChanged, Stopping
from treadle.engine.journal import replay
from treadle.engine.run import RunOptions
from treadle.engine.trace_reader import read_table

PROBE_DIR = Path(__file__).parents[1] / "data" / "probe"
GATED = {"name": "a", "kind": "python", "function": "probe_cols:gated"}
FLAKY = {"name": "a", "kind": "python", "function": "probe_cols:flaky"}
BANG = {"name": "b", "kind": "template", "template": "{{ a }}!"}


def pipeline(tmp_path: Path, rows: int, columns: list[dict], **run) -> dict:
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(rows)}).to_csv(seed, index=False)
    return {
        "seed": {"path": str(seed)},
        "columns": columns,
        "run": {"row_group_size": 10, "row_groups_in_flight": 100, "max_parallel": 4, "backoff_s": 0, **run},
    }


def started(tmp_path: Path, config: dict, **options) -> tuple[RunController, queue.SimpleQueue]:
    """A started run and a queue of its events from the first one on."""
    controller = RunController(treadle.load(config, base_dir=PROBE_DIR), RunOptions(out=tmp_path / "run", **options))
    events = controller.subscribe()
    return controller.start(), events


@pytest.fixture
def held_probe(probe):
    """The probe, for runs that end with cells still held at its gate: their waits belonged to the
    run's loop, which is closed by then, so they are forgotten rather than released."""
    yield probe
    probe.reset()


def attempts_by_status(run_dir: Path) -> dict[str, list[int]]:
    """The rows of the cell attempts in the trace, by status."""
    rows: dict[str, list[int]] = {}
    for attempt in read_table(run_dir)[0].to_pylist():
        rows.setdefault(attempt["status"], []).append(attempt["row"])
    return {status: sorted(found) for status, found in rows.items()}


def assert_cut_off(result, run_dir: Path, cancelled: int, done: int) -> None:
    """`cancelled` cells were cut off by an abort: each is one cancelled attempt in the trace, ready
    (not running) in summary.json, and never journaled as finished; `done` cells finished."""
    cells = result.summary["cells"]
    assert cells["running"] == 0 and cells["done"] == done and cells["ready"] == result.summary["rows"]["total"] - done
    by_status = attempts_by_status(run_dir)
    assert len(by_status.get("cancelled", [])) == cancelled and len(by_status.get("done", [])) == done
    assert not set(by_status["cancelled"]) & set(by_status.get("done", []))
    assert sorted(replay(run_dir / "journal.jsonl").done) == by_status.get("done", [])


def next_event(events: queue.SimpleQueue, kind: str):
    while True:
        event = events.get(timeout=20)
        if event.type == kind:
            return event


def test_cancel_lets_running_cells_finish_within_the_grace_period_and_starts_no_more(tmp_path, probe):
    probe.close_gate()
    controller, events = started(tmp_path, pipeline(tmp_path, 20, [GATED, BANG]))
    probe.wait_for(lambda p: p.running == 4)
    controller.cancel()
    assert next_event(events, "stopping").payload == Stopping(reason="interrupted")
    assert controller.snapshot().status == "stopping"
    assert probe.release_waiting() == 4
    result = controller.wait(30)

    assert result.status == "interrupted" and result.exit_code == 130
    assert len(probe.levels) == 4, "no cell started after the cancel"
    assert result.summary["columns"]["a"]["cells"]["done"] == 4
    assert result.summary["columns"]["b"]["cells"]["done"] == 0
    assert result.summary["rows"]["unfinished"] == 20
    output = result.output  # every row, with what finished
    assert len(output) == 20 and output["a"].notna().sum() == 4


def test_cells_still_running_when_the_grace_period_ends_are_cancelled(tmp_path, held_probe):
    probe = held_probe
    probe.close_gate()  # never opened: the cells would wait for ever
    controller, _ = started(tmp_path, pipeline(tmp_path, 8, [GATED]), grace_s=0.2)
    probe.wait_for(lambda p: p.running == 4)
    controller.cancel()
    result = controller.wait(30)
    assert result is not None and result.status == "interrupted"
    assert probe.running == 0 and probe.finished == 4, "the four held cells were cancelled"
    assert result.summary["cells"]["done"] == 0 and result.summary["rows"]["unfinished"] == 8
    assert_cut_off(result, tmp_path / "run", cancelled=4, done=0)
    assert controller.snapshot().cells["running"] == 0


def test_abort_cancels_running_cells_at_once_and_keeps_what_finished(tmp_path, held_probe):
    probe = held_probe
    probe.close_gate()
    controller, _ = started(tmp_path, pipeline(tmp_path, 12, [GATED]))
    probe.wait_for(lambda p: p.running == 4)
    assert probe.release_waiting() == 4
    probe.wait_for(lambda p: p.finished == 4 and p.running == 4)  # four done, the next four held
    controller.abort()
    result = controller.wait(30)
    assert result is not None and result.status == "interrupted"
    assert probe.running == 0 and probe.finished == 8, "the four held cells were cancelled"
    assert result.summary["cells"]["done"] == 4 and result.summary["rows"]["unfinished"] == 8
    assert_cut_off(result, tmp_path / "run", cancelled=4, done=4)
    assert controller.snapshot().cells["running"] == 0
    done = result.output.dropna(subset=["a"])
    assert (done["a"] == done["id"] * 10).all() and len(done) == 4


def test_a_resume_after_an_abort_runs_the_cancelled_cells_again_and_nothing_that_finished(tmp_path, held_probe):
    probe = held_probe
    probe.close_gate()
    config = pipeline(tmp_path, 12, [GATED, BANG])
    controller, _ = started(tmp_path, config)
    probe.wait_for(lambda p: p.running == 4)
    assert probe.release_waiting() == 4
    probe.wait_for(lambda p: p.finished == 4 and p.running == 4)
    controller.abort()
    assert controller.wait(30).status == "interrupted"
    first_run = {row: n for (_, row), n in probe.starts.items()}
    finished = set(replay(tmp_path / "run" / "journal.jsonl").done)
    cancelled = set(first_run) - finished
    assert len(finished) == 4 and len(cancelled) == 4
    probe.reset()  # forgets the cancelled cells' waits, which belonged to the first run's closed loop

    resumed = RunController.from_run_dir(tmp_path / "run", pipeline=treadle.load(config, base_dir=PROBE_DIR))
    result = resumed.start().wait(30)
    assert result is not None and result.status == "done"
    second_run = {row: n for (_, row), n in probe.starts.items()}
    assert set(second_run) == set(range(12)) - finished and cancelled <= set(second_run)
    assert set(second_run.values()) == {1}
    assert result.output["b"].tolist() == [f"{i * 10}!" for i in range(12)]


def test_limits_are_checked_before_they_reach_the_run(tmp_path, probe):
    controller, events = started(tmp_path, pipeline(tmp_path, 4, [GATED]), hold_open=True)
    next_event(events, "idle")
    with pytest.raises(ValueError, match=r"unknown limit 'slot'; known: row_groups, slots"):
        controller.set_limit("slot", 2)
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="'slots' must be"):
            controller.set_limit("slots", bad)
    assert controller.limits() == {"row_groups": 100, "slots": 4}
    controller.set_limit("row_groups", 2)
    changed = next_event(events, "limit_changed")
    assert changed.payload == LimitChanged(limit="row_groups", old=100, new=2)
    controller.close()
    result = controller.wait(30)
    assert result is not None and result.status == "done"
    history = result.summary["limit_history"]
    assert [total for _, total in history["row_groups"]] == [100, 2] and len(history["slots"]) == 1


def test_retry_by_row_and_of_every_failure(tmp_path, probe):
    probe.failing_rows = {1, 4, 7}
    controller, events = started(tmp_path, pipeline(tmp_path, 10, [FLAKY, BANG]), hold_open=True)
    next_event(events, "idle")
    assert controller.snapshot().cells["failed"] == 3
    probe.failing_rows = set()

    assert controller.retry(rows=[1, 2]) == 1, "only failed cells are retried; row 2 had none"
    next_event(events, "idle")
    assert controller.snapshot(rows=[1, 4]).window == {1: ("done", "done"), 4: ("failed", "blocked")}

    assert controller.retry(all_failed=True) == 2
    next_event(events, "idle")
    assert controller.retry(all_failed=True) == 0
    controller.close()
    result = controller.wait(30)
    assert result is not None and result.status == "done"
    assert result.output["b"].tolist() == [f"{i + 1}!" for i in range(10)]
    assert {row: n for (_, row), n in probe.starts.items() if n > 1} == {1: 2, 4: 2, 7: 2}


def test_a_snapshot_counts_cells_by_column_groups_and_limits_in_use(tmp_path, probe):
    probe.close_gate()
    config = pipeline(tmp_path, 30, [GATED, BANG], row_groups_in_flight=2)
    controller, _ = started(tmp_path, config)
    probe.wait_for(lambda p: p.running == 4)
    snap = controller.snapshot(rows=[0, 29, -1, 30])

    assert (snap.status, snap.rows, snap.columns) == ("running", 30, ("a", "b"))
    assert snap.window == {0: ("running", "waiting"), 29: ("waiting", "waiting")}, "rows out of range are left out"
    assert snap.row_groups == {"finished": 0, "in_flight": 2, "pending": 1}
    assert (snap.limits["slots"].total, snap.limits["slots"].in_use) == (4, 4)
    assert (snap.limits["row_groups"].total, snap.limits["row_groups"].in_use) == (2, 2)
    a, b = snap.by_column["a"], snap.by_column["b"]
    assert (a["running"], a["ready"], a["waiting"]) == (4, 16, 10), "group 2 is not admitted yet"
    assert b["waiting"] == 30
    assert (snap.total_cells, snap.finished_cells) == (60, 0)
    assert snap.cells["running"] == 4 and sum(snap.cells.values()) == 60
    probe.open_gate()
    result = controller.wait(30)
    assert result is not None and result.status == "done"


def test_after_the_run_commands_do_nothing_and_reads_give_the_final_state(tmp_path, probe):
    probe.failing_rows = {3}
    controller, events = started(tmp_path, pipeline(tmp_path, 6, [FLAKY, BANG]))
    late = controller.subscribe()
    controller.unsubscribe(late)
    result = controller.wait(30)
    assert result is not None and result.status == "failed" and controller.finished

    controller.pause()
    controller.resume()
    controller.set_limit("slots", 1)
    assert controller.limits()["slots"] == 4
    assert controller.retry(all_failed=True) == 0
    assert controller.drop([3]) == 0
    snap = controller.snapshot(rows=[3])
    assert snap.status == "failed" and snap.window == {3: ("failed", "blocked")}
    assert snap.elapsed_s == pytest.approx(result.summary["wall_s"], abs=1e-3)
    assert controller.failures() == result.failures
    assert controller.summary() == result.summary
    assert controller.wait(0) is result

    seen = []
    while not events.empty():
        seen.append(events.get().type)
    assert seen[0] == "run_started" and seen[-1] == "run_finished" and "cell_failed" in seen
    assert late.empty(), "an unsubscribed queue gets nothing"


def test_a_cell_of_a_written_and_released_group_is_read_back_from_its_file(tmp_path, probe):
    probe.failing_rows = {15}  # keeps group 1 in memory; group 0 is written and let go
    controller, _ = started(tmp_path, pipeline(tmp_path, 20, [FLAKY, BANG]))
    assert controller.wait(30).status == "failed"
    for row in (3, 12):
        detail = controller.cell_detail(row, "b")
        assert (detail.row, detail.state, detail.value, detail.error) == (row, "done", f"{row + 1}!", None)
        assert detail.inputs == {"a": row + 1}
        assert controller.cell_detail(row, "a").inputs == {"id": row}
    failed = controller.cell_detail(15, "a")
    assert (failed.state, failed.value, failed.error["message"]) == ("failed", None, "row 15 is not ready")


def test_resuming_needs_the_pipeline_of_a_run_built_in_python_and_the_same_seed(tmp_path, probe):
    probe.failing_rows = {2}
    config = pipeline(tmp_path, 10, [FLAKY])
    run_dir = tmp_path / "run"
    assert treadle.run(config, base_dir=PROBE_DIR, out=run_dir).status == "failed"
    with pytest.raises(ConfigError, match="this run's pipeline was built in Python: pass it to resume"):
        RunController.from_run_dir(run_dir)
    with pytest.raises(ConfigError, match="no column named z"):
        RunController.from_run_dir(run_dir, pipeline=treadle.load(config, base_dir=PROBE_DIR), recompute=["z"])

    pd.DataFrame({"id": range(12)}).to_csv(tmp_path / "seed.csv", index=False)
    grown = treadle.load(config, base_dir=PROBE_DIR)
    with pytest.raises(ConfigError, match="the seed changed: it has 12 rows, the run had 10"):
        RunController.from_run_dir(run_dir, pipeline=grown)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "cells.parquet",
        "failures.jsonl",
        "output.parquet",
        "run.json",
        "summary.json",
        "trace.parquet",
    ], "a refused resume writes nothing"
