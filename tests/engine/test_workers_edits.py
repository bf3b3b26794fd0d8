"""Fixing a column while a run on two worker processes goes (`--workers 2`), as for one process: an edit
and a function reload reach every worker, recompute and a column's retry go to the workers holding or
having written each group, the versions land in run.json and output.parquet, and a resume continues at
the latest version. Runs held open against the simulator over HTTP, whose answers echo the prompt."""

from __future__ import annotations

import json
import os
import pickle
import queue
import signal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import yaml
from workers_helpers import wait_until_settled

import treadle
from treadle.engine.column_edits import Versions, prepare_edit
from treadle.engine.controller import RunController
from treadle.engine.events import Progress
from treadle.engine.run import RunOptions
from treadle.engine.workers import open_controller
from treadle.engine.workers.worker import WorkerSpec, open_run
from treadle.sim import SimConfig, SimulatorThread

SLOTS = 8
"""Execution slots: 4 for each worker."""

FAILS_ON_THREES = """
def check(row):
    if row["id"] % 10 == 3:
        raise ValueError(f"row {row['id']} has a three")
    return row["id"] * 2
"""
FIXED = """
def check(row):
    return row["id"] * 2
"""
FLAGGED = """
from pathlib import Path


def check(row):
    if row["id"] % 2 and (Path(__file__).parent / "broken").exists():
        raise ValueError(f"odd row {row['id']}")
    return row["id"] * 2
"""


def _pipeline(tmp_path: Path, rows: int, columns: list[dict], url: str | None = None) -> Path:
    pd.DataFrame({"id": range(rows)}).to_csv(tmp_path / "seed.csv", index=False)
    config: dict = {
        "seed": {"path": "seed.csv"},
        "columns": columns,
        "run": {"row_group_size": 10, "max_parallel": SLOTS, "retries": 0, "backoff_s": 0, "early_stop": None},
    }
    if url is not None:
        config["models"] = {"m": {"model": "sim-model", "base_url": url, "max_parallel": SLOTS}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _two_workers(path: Path, out: Path) -> tuple[RunController, queue.SimpleQueue]:
    options = RunOptions(out=out, hold_open=True, cache="off", workers=2)
    controller = open_controller(treadle.load(path), options)
    events = controller.subscribe()
    return controller.start(), events


def _wait_idle(events: queue.SimpleQueue) -> None:
    while events.get(timeout=60).type != "idle":
        pass


def _finish(controller: RunController) -> pd.DataFrame:
    controller.close()
    result = controller.wait(60)
    assert result is not None
    return pd.read_parquet(result.output_path).sort_values("id").reset_index(drop=True)


def _workers_of(run_dir: Path, column: str, rows: list[int], run: int = 1) -> set[int]:
    """Which workers ran `column`'s cells of `rows` the `run`-th time (the trace's `worker`; a rerun's
    attempts count from 1 again)."""
    trace = pq.read_table(run_dir / "trace.parquet").to_pandas().sort_values("seq")
    ran = trace[(trace["column"] == column) & trace["row"].isin(rows)].groupby("row").nth(run - 1)
    assert len(ran) == len(rows)
    return set(ran["worker"].tolist())


LLM = {"name": "l", "kind": "llm", "model": "m", "prompt": "Say {{ id }}"}
AFTER_LLM = {"name": "t", "kind": "template", "template": "{{ l }}!"}


def test_an_edited_prompt_reaches_the_cells_of_every_worker(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=100, seed=2)) as url:
        controller, events = _two_workers(_pipeline(tmp_path, 300, [LLM, AFTER_LLM], url), tmp_path / "run")
        while not isinstance(payload := events.get(timeout=60).payload, Progress) or not payload.cells.get("done"):
            pass
        controller.pause()
        assert controller.update_column("l", prompt="Shout {{ id }}") == 2
        controller.resume()
        _wait_idle(events)
        out = _finish(controller)
    shouted = out["l"] == out["id"].map(lambda i: f"Simulated answer to: Shout {i}")
    said = out["l"] == out["id"].map(lambda i: f"Simulated answer to: Say {i}")
    assert (shouted | said).all() and 0 < said.sum() < 300
    assert (out["l__version"] == shouted.map({True: 2, False: 1})).all()  # each value says which version made it
    assert (out["t"] == out["l"] + "!").all()
    assert _workers_of(tmp_path / "run", "l", out.loc[shouted, "id"].tolist()) == {0, 1}
    versions = json.loads((tmp_path / "run" / "run.json").read_text())["versions"]
    assert [(v["version"], v["column"], v["changes"]) for v in versions] == [
        (2, "l", {"prompt": {"old": "Say {{ id }}", "new": "Shout {{ id }}"}})
    ]


def test_recompute_reruns_a_column_and_its_dependents_in_every_worker(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=5, seed=2))
    with sim as url:
        controller, events = _two_workers(_pipeline(tmp_path, 60, [LLM, AFTER_LLM], url), tmp_path / "run")
        _wait_idle(events)
        requests = sim.stats()["requests_total"]
        assert controller.update_column("l", prompt="Shout {{ id }}") == 2
        plan = controller.recompute_plan("l")
        assert (plan.cells, plan.calls) == (60, 60)
        assert controller.recompute("l") == 60
        _wait_idle(events)
        assert sim.stats()["requests_total"] - requests == 60
        assert controller.update_column("l", prompt="Whisper {{ id }}") == 3
        assert controller.recompute_plan("l", rows=[5, 45]).cells == 2
        assert controller.recompute("l", rows=[5, 45]) == 2
        _wait_idle(events)
        out = _finish(controller)
    expected = {i: "Whisper" if i in (5, 45) else "Shout" for i in range(60)}
    assert out["l"].tolist() == [f"Simulated answer to: {expected[i]} {i}" for i in range(60)]
    assert out["t"].tolist() == [f"Simulated answer to: {expected[i]} {i}!" for i in range(60)]
    assert out["l__version"].tolist() == [3 if i in (5, 45) else 2 for i in range(60)]
    assert _workers_of(tmp_path / "run", "l", list(range(60)), run=2) == {0, 1}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "done" and [v["version"] for v in summary["versions"]] == [2, 3]


def test_a_reloaded_function_retries_a_columns_failed_cells_in_every_worker(tmp_path):
    module = "workers_edits_threes"
    columns = [{"name": "n", "kind": "python", "function": f"{module}:check"}]
    path = _pipeline(tmp_path, 60, columns)
    (tmp_path / f"{module}.py").write_text(FAILS_ON_THREES)
    controller, events = _two_workers(path, tmp_path / "run")
    _wait_idle(events)
    failing = [row for row in range(60) if row % 10 == 3]
    assert sorted(f["row"] for f in controller.failures()) == failing
    (tmp_path / f"{module}.py").write_text(FIXED)
    assert controller.reload_function("n") == 2
    assert controller.retry(columns=["n"]) == len(failing)
    _wait_idle(events)
    assert controller.failures() == []
    out = _finish(controller)
    assert out["n"].tolist() == [i * 2 for i in range(60)]
    assert out["n__version"].tolist() == [2 if i % 10 == 3 else 1 for i in range(60)]
    assert _workers_of(tmp_path / "run", "n", failing, run=2) == {0, 1}


def test_a_resumed_run_on_two_workers_continues_at_the_latest_version(tmp_path):
    module = "workers_edits_resumed"
    columns = [
        {"name": "a", "kind": "python", "function": f"{module}:check"},
        {"name": "b", "kind": "template", "template": "{{ a }}!"},
    ]
    path = _pipeline(tmp_path, 40, columns)
    (tmp_path / f"{module}.py").write_text(FLAGGED)
    (tmp_path / "broken").touch()
    run_dir = tmp_path / "run"
    controller, events = _two_workers(path, run_dir)
    _wait_idle(events)
    assert controller.update_column("b", template="[{{ a }}]") == 2
    controller.close()
    assert controller.wait(60).status == "failed"

    (tmp_path / "broken").unlink()
    result = RunController.from_run_dir(run_dir, options=RunOptions(workers=2)).start().wait(60)
    assert result.status == "done"
    out = pd.read_parquet(result.output_path).sort_values("id")
    assert out["b"].tolist() == [f"[{i * 2}]" if i % 2 else f"{i * 2}!" for i in range(40)]
    assert out["b__version"].tolist() == [2 if i % 2 else 1 for i in range(40)]


def test_groups_whose_writer_ended_are_recomputed_by_the_other_worker(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=5, seed=2))
    with sim as url:
        kept = {"name": "k", "kind": "template", "template": "k{{ id }}"}  # not recomputed: read back from the files
        controller, events = _two_workers(_pipeline(tmp_path, 60, [LLM, AFTER_LLM, kept], url), tmp_path / "run")
        _wait_idle(events)
        workers = [worker.pid for worker in controller.snapshot().workers]
        assert len(workers) == 2 and None not in workers
        os.kill(workers[0], signal.SIGKILL)
        while all(w.alive for w in controller.snapshot().workers):
            events.get(timeout=60)  # the parent hears of it on its loop: look again after its next event
        requests = sim.stats()["requests_total"]
        assert controller.update_column("l", prompt="Shout {{ id }}") == 2
        assert controller.recompute_plan("l").cells == 60
        assert controller.recompute("l") == 60
        _wait_idle(events)
        assert sim.stats()["requests_total"] - requests == 60
        out = _finish(controller)
    assert out["id"].tolist() == list(range(60))  # each row once
    assert out["l"].tolist() == [f"Simulated answer to: Shout {i}" for i in range(60)]
    assert out["t"].tolist() == [f"Simulated answer to: Shout {i}!" for i in range(60)]
    assert out["l__version"].tolist() == [2] * 60
    assert out["k"].tolist() == [f"k{i}" for i in range(60)]


def test_recompute_while_the_workers_hold_groups_counts_and_reruns_their_finished_cells(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=50, seed=2))
    with sim as url:  # l alone: a row whose dependent is ready (paused) would be left out, as in one process
        controller, events = _two_workers(_pipeline(tmp_path, 300, [LLM], url), tmp_path / "run")
        while not isinstance(payload := events.get(timeout=60).payload, Progress) or not payload.cells.get("done"):
            pass
        controller.pause()
        wait_until_settled(events)
        snapshot = controller.snapshot()
        assert snapshot.row_groups["in_flight"] > 0  # some groups are held: only their workers know their cells
        finished = snapshot.by_column["l"]["done"]
        assert 0 < finished < 300
        assert controller.update_column("l", prompt="Shout {{ id }}") == 2
        assert controller.recompute_plan("l").cells == finished
        assert controller.recompute("l") == finished
        controller.resume()
        _wait_idle(events)
        out = _finish(controller)
        requests = sim.stats()["requests_total"]
    assert out["l"].tolist() == [f"Simulated answer to: Shout {i}" for i in range(300)]
    assert out["l__version"].tolist() == [2] * 300
    assert requests == 300 + finished


def test_a_worker_started_after_an_edit_starts_at_the_latest_version(tmp_path):
    loaded = treadle.load(_pipeline(tmp_path, 4, [{"name": "b", "kind": "template", "template": "{{ id }}!"}]))
    versions = Versions()
    edit = prepare_edit(loaded, "b", {"template": "{{ id }}?"})
    versions.add("b", "edit", edit.changes, edit.loaded.source_hash)
    spec = WorkerSpec(
        index=0,
        pipeline=pickle.dumps(loaded),  # as the run started: the edit came after
        base_dir=str(tmp_path),
        options=RunOptions(out=tmp_path / "run", hold_open=True),
        recovery=None,
        limits={},
        budgets={},
        versions=versions.history,
    )
    run = open_run(spec, tmp_path / "run", lambda message: None)
    assert run.scheduler.generators[0].generate({"id": 3}) == {"b": "3?", "b__version": 2}


def test_a_columns_retry_while_the_workers_hold_groups_takes_their_failed_cells_too(tmp_path):
    module = "workers_edits_held"
    checked = {"name": "n", "kind": "python", "function": f"{module}:check", "depends_on": ["l"]}
    (tmp_path / f"{module}.py").write_text(FAILS_ON_THREES)
    sim = SimulatorThread(SimConfig(latency_ms=50, seed=2))
    with sim as url:
        controller, events = _two_workers(_pipeline(tmp_path, 300, [LLM, checked], url), tmp_path / "run")
        while not isinstance(payload := events.get(timeout=60).payload, Progress) or not payload.cells.get("failed"):
            pass
        controller.pause()
        wait_until_settled(events)
        failed = controller.snapshot().by_column["n"]["failed"]
        assert failed > 0
        (tmp_path / f"{module}.py").write_text(FIXED)
        assert controller.reload_function("n") == 2
        assert controller.retry(columns=["n"]) == failed  # the held groups' failed cells, which only their workers know
        controller.resume()
        _wait_idle(events)
        assert controller.failures() == []
        out = _finish(controller)
    assert out["n"].tolist() == [i * 2 for i in range(300)]
