"""--workers N: row groups in several engine processes, one run directory, against the simulator over HTTP."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from workers_helpers import SLOTS, flaky_pipeline, llm_pipeline, sorted_output, wait_for_done_cells, wait_until_settled

import treadle
from treadle.cli import main
from treadle.engine.errors import ConfigError
from treadle.engine.events import Progress
from treadle.engine.journal import replay
from treadle.engine.limits import Limit
from treadle.engine.pipeline_loading import load_pipeline
from treadle.engine.rate_limits import ModelRate
from treadle.engine.workers.messages import shares
from treadle.engine.workers.shared_limits import SharedLimits
from treadle.engine.workers.shared_rates import ReplayClock, SharedRates
from treadle.sim import SimConfig, SimulatorThread

ROWS = 240


def _pipeline(tmp_path: Path, url: str, **run: object) -> Path:
    return flaky_pipeline(tmp_path, url, ROWS, **run)


def _failures(run_dir: Path) -> list[dict]:
    lines = (run_dir / "failures.jsonl").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda f: (f["row"], f["column"]))


def test_two_workers_write_the_same_run_directory_as_one_process(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=5, seed=3)) as url:
        pipeline = _pipeline(tmp_path, url)
        one = treadle.run(pipeline, out=tmp_path / "one", cache="off")
        two = treadle.run(pipeline, out=tmp_path / "two", cache="off", workers=2)
    failed_rows = len(range(0, ROWS, 17))
    assert one.status == two.status == "failed"  # the rows whose python cell failed
    pd.testing.assert_frame_equal(sorted_output(one.run_dir), sorted_output(two.run_dir))
    assert _failures(one.run_dir) == _failures(two.run_dir)
    assert len(_failures(two.run_dir)) == failed_rows
    for key in ("rows", "cells"):
        assert one.summary[key] == two.summary[key]
    assert two.summary["rows"]["failed"] == failed_rows
    assert {name: c["cells"] for name, c in two.summary["columns"].items()} == {
        name: c["cells"] for name, c in one.summary["columns"].items()
    }
    assert two.summary["rate_limits"]["m"]["requests"] == 2 * ROWS
    assert two.summary["limits"]["slots"]["peak"] <= SLOTS
    # One directory, as one process leaves it: no group files, no journals (the workers' included).
    assert sorted(p.name for p in two.run_dir.iterdir()) == sorted(p.name for p in one.run_dir.iterdir())
    trace = pq.read_table(two.run_dir / "trace.parquet").to_pandas()
    assert len(trace) == len(pq.read_table(one.run_dir / "trace.parquet"))
    assert trace["seq"].tolist() == list(range(1, len(trace) + 1))
    # Each worker's slots are lanes of their own (more than SLOTS lanes once a worker's share grows at the
    # run's tail, never more than SLOTS in use at once).
    assert trace["slot"].ge(0).all() and trace.groupby("slot")["worker"].nunique().max() == 1
    assert trace.loc[trace["column"] == "a", "tokens_in"].notna().all()
    assert (trace["status"] == "failed").sum() == failed_rows


def test_the_cli_takes_workers_and_exits_as_for_one_process(tmp_path, capsys):
    with SimulatorThread(SimConfig(latency_ms=1, seed=3)) as url:
        pipeline = _pipeline(tmp_path, url)
        code = main(["run", str(pipeline), "--no-ui", "--no-cache", "--workers", "2", "--out", str(tmp_path / "r")])
    assert code == 1, capsys.readouterr().err  # some rows failed
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["rows"] == {"total": ROWS, "done": ROWS - 15, "failed": 15, "dropped": 0, "unfinished": 0}
    with pytest.raises(SystemExit) as usage:
        main(["run", str(pipeline), "--no-ui", "--workers", "65"])
    assert usage.value.code == 2
    assert "at most 64 worker processes" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [0, 65, True])
def test_run_workers_is_checked(tmp_path, workers):
    with SimulatorThread(SimConfig()) as url:
        pipeline = _pipeline(tmp_path, url, workers=workers)
        with pytest.raises(ConfigError, match="workers"):
            load_pipeline(pipeline)


def test_limits_are_shared_out_whole_and_at_least_one_each():
    assert shares(16, 2) == [8, 8]
    assert shares(1024, 3) == [342, 341, 341]
    assert shares(1, 2) == [1, 1]  # a worker is never left with nothing to run on


def test_a_limit_changed_before_any_worker_runs_waits_for_their_start():
    # A person may press + while the workers start (seconds): nothing to send yet, and no error; each
    # worker starts with its share of the totals then.
    rate = ModelRate(Limit("model:m", 8), rpm=600, tpm=None, adaptive=True, clock=time.perf_counter)
    limits = {"slots": Limit("slots", 16), "model:m": rate.limit}
    workers: list = []
    shared = SharedLimits(limits, {"model:m": rate}, SharedRates({"model:m": rate}, ReplayClock()), workers)
    shared.send_limit("slots")
    shared.send_budgets("model:m")
    shared.send_all()
    assert workers == []


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux: /proc): a parent's fork server, the server's workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_for_exit(pids: list[int], timeout_s: float = 60) -> None:
    """Until every process in `pids` has ended (pidfds: no polling)."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            continue
    try:
        for fd in fds:
            assert select.select([fd], [], [], timeout_s)[0], "a worker outlived its parent"
    finally:
        for fd in fds:
            os.close(fd)


def test_a_killed_worker_leaves_its_row_groups_to_the_other(tmp_path, caplog):
    sim = SimulatorThread(SimConfig(latency_ms=40, seed=5))
    with sim as url:
        controller = treadle.start(llm_pipeline(tmp_path, url), out=tmp_path / "run", cache="off")
        wait_for_done_cells(controller, 40)  # both workers have started and finished some cells
        victim = [worker.pid for worker in controller.snapshot().workers]
        assert len(victim) == 2 and None not in victim
        os.kill(victim[0], signal.SIGKILL)
        result = controller.wait(120)
        requests = sim.stats()["requests_total"]
    assert result is not None and result.status == "done"
    output = sorted_output(result.run_dir)
    assert output["id"].tolist() == list(range(300))  # every row once: no duplicates, none lost
    assert output["b"].notna().all()
    assert result.summary["cells"]["done"] == 600
    died = [r.getMessage() for r in caplog.records if r.name == "treadle.workers"]
    assert len(died) == 1 and "ended mid-run" in died[0]
    # The dead worker's finished cells were not asked again: at most its share of slots was in flight.
    assert 600 <= requests <= 600 + SLOTS // 2


def test_sigkill_of_the_parent_then_resume_in_one_process_requests_no_finished_cell_again(tmp_path, capsys):
    sim = SimulatorThread(SimConfig(latency_ms=60, seed=3))
    with sim as url:
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "treadle.cli", "run", str(llm_pipeline(tmp_path, url)), "--no-ui",
             "--out", str(run_dir), "--events", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:  # until the workers have started and finished some cells
            event = json.loads(line)
            if event["type"] == "progress" and event["cells"].get("done", 0) >= 40:
                break
        (fork_server,) = _children(proc.pid)
        workers = _children(fork_server)
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        _wait_for_exit([fork_server, *workers])  # each saw its parent go; the workers wrote what they held
        journals = sorted(run_dir.glob("journal-w*.jsonl"))
        assert len(journals) == 2
        finished_before = sum(len(c) for path in journals for c in replay(path).done.values())
        assert 0 < finished_before < 600
        assert main(["resume", str(run_dir), "--no-ui", "--workers", "1"]) == 0, capsys.readouterr().err
        requests = sim.requests()
    # Every cell was requested once, except those in flight at the kill (at most the 16 slots).
    assert 600 <= len(requests) <= 600 + SLOTS
    output = sorted_output(run_dir)
    assert output["id"].tolist() == list(range(300)) and output["b"].notna().all()
    assert not list(run_dir.glob("journal*"))


def test_a_run_of_one_process_resumes_with_two_workers(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=20, seed=3))
    with sim as url:
        pipeline = llm_pipeline(tmp_path, url)
        controller = treadle.start(pipeline, out=tmp_path / "run", cache="off", workers=1)
        wait_for_done_cells(controller, 40)
        controller.cancel()
        first = controller.wait(60)
        assert first is not None and first.status == "interrupted"
        done_before = first.summary["cells"]["done"]
        result = treadle.resume(tmp_path / "run", workers=2)
        requests = sim.stats()["requests_total"]
    assert result.status == "done"
    assert result.summary["cells"]["done"] == 600
    assert 600 <= requests <= 600 + SLOTS
    assert done_before > 0
    assert sorted_output(result.run_dir)["b"].notna().all()


def _in_flight_at(requests: list[dict], moment: float) -> int:
    return sum(1 for r in requests if r["t"] <= moment < (r["t_end"] if r["t_end"] is not None else float("inf")))


def test_a_live_limit_change_reaches_every_worker(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=50, seed=7))
    with sim as url:
        controller = treadle.start(llm_pipeline(tmp_path, url), out=tmp_path / "run", cache="off")
        wait_for_done_cells(controller, 120)  # time for the adaptive limit to grow past 4, on a loaded machine too
        controller.set_limit("model:m", 4)
        changed_at = len(sim.requests())
        assert controller.snapshot().limits["model:m"].total == 4
        result = controller.wait(120)
        requests = sim.requests()
    assert result is not None and result.status == "done"
    before = requests[:changed_at]
    assert max(_in_flight_at(before, r["t"]) for r in before) > 4  # the two workers used their 8 slots each
    # Requests may start until each worker has its share (2 of 4); once those have ended, 4 at most.
    settled = changed_at + SLOTS
    drained = max(r["t_end"] for r in requests[:settled])
    after = [r for r in requests[settled:] if r["t"] >= drained]
    assert len(after) > 100
    assert max(_in_flight_at(requests, r["t"]) for r in after) <= 4
    assert result.summary["limit_history"]["model:m"][-1][1] == 4


def test_pause_stops_every_worker_and_resume_goes_on(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=30, seed=7))
    with sim as url:
        controller = treadle.start(llm_pipeline(tmp_path, url), out=tmp_path / "run", cache="off")
        wait_for_done_cells(controller, 40)
        controller.pause()
        events = controller.subscribe()
        wait_until_settled(events)
        paused_at = len(sim.requests())
        progress_events = 0
        while progress_events < 2:
            progress_events += isinstance(events.get(timeout=60).payload, Progress)
        assert len(sim.requests()) == paused_at  # nothing started while paused
        snapshot = controller.snapshot()
        assert snapshot.status == "paused" and snapshot.cells["done"] < 600
        groups = snapshot.row_groups  # a group a worker holds beyond its share waits: not in flight
        assert groups["in_flight"] <= snapshot.limits["row_groups"].total
        assert groups["finished"] + groups["in_flight"] + groups["pending"] == 300 // 20
        controller.resume()
        result = controller.wait(120)
    assert result is not None and result.status == "done"
    assert result.summary["cells"]["done"] == 600


def test_ctrl_c_stops_every_worker_then_resume_with_two_finishes(tmp_path, capsys):
    sim = SimulatorThread(SimConfig(latency_ms=40, seed=3))
    with sim as url:
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "treadle.cli", "run", str(llm_pipeline(tmp_path, url)), "--no-ui",
             "--out", str(run_dir), "--events", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["type"] == "progress" and event["cells"].get("done", 0) >= 40:
                break
        proc.send_signal(signal.SIGINT)  # the workers have sessions of their own: the parent stops them
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "Traceback" not in stderr
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "interrupted" and 0 < summary["cells"]["done"] < 600
        assert main(["resume", str(run_dir), "--no-ui"]) == 0, capsys.readouterr().err  # run.workers: 2
        requests = sim.stats()["requests_total"]
    assert 600 <= requests <= 600 + SLOTS
    assert sorted_output(run_dir)["b"].notna().all()


def test_fewer_row_groups_than_workers_start_a_worker_per_group(tmp_path):
    with SimulatorThread(SimConfig(seed=3)) as url:
        controller = treadle.start(llm_pipeline(tmp_path, url), out=tmp_path / "run", rows=30, workers=4)
        result = controller.wait(120)
    assert result is not None and result.status == "done"
    assert controller.workers == 2  # 30 rows: two row groups of 20
    assert sorted_output(result.run_dir)["id"].tolist() == list(range(30))
    assert set(pd.read_parquet(result.run_dir / "trace.parquet")["worker"]) == {0, 1}  # a group each, not both to one


def test_without_a_trace_the_workers_run_times_reach_the_summary(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=5, seed=3)) as url:
        pipeline = llm_pipeline(tmp_path, url)
        config = json.loads(pipeline.read_text())
        config["run"]["trace"] = False
        pipeline.write_text(json.dumps(config))
        result = treadle.run(pipeline, out=tmp_path / "run", rows=100, cache="off")
    assert result.status == "done"
    assert not (result.run_dir / "trace.parquet").exists()
    for column in ("a", "b"):
        latency = result.summary["columns"][column]["latency_s"]
        assert 0.005 <= latency["p50"] <= latency["p99"]


BATCH = """
def lengths(frame):
    return frame["q"].str.len() * 10 + frame["id"] % 3
"""


def test_batch_columns_and_filters_run_in_workers_as_in_one_process(tmp_path):
    seed = pd.DataFrame({"id": range(ROWS), "q": [f"question {i}" for i in range(ROWS)]})
    seed.to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "batchfns.py").write_text(BATCH)
    config = {
        "seed": {"path": "s.csv"},
        "columns": [
            {"name": "size", "kind": "python", "function": "batchfns:lengths", "batch": True},
            {"name": "keep", "kind": "filter", "expression": "{{ size % 3 != 1 }}"},
            {"name": "label", "kind": "template", "template": "{{ id }}-{{ size }}"},
        ],
        "run": {"row_group_size": 20},
    }
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(json.dumps(config))
    one = treadle.run(pipeline, out=tmp_path / "one", cache="off")
    two = treadle.run(pipeline, out=tmp_path / "two", cache="off", workers=2)
    filtered = sum(1 for i in range(ROWS) if (len(f"question {i}") * 10 + i % 3) % 3 == 1)
    assert one.status == two.status == "done"
    pd.testing.assert_frame_equal(sorted_output(one.run_dir), sorted_output(two.run_dir))
    assert len(sorted_output(two.run_dir)) == ROWS - filtered
    assert one.summary["rows"] == two.summary["rows"]
    assert two.summary["rows"]["filtered"] == filtered
    assert _failures(one.run_dir) == _failures(two.run_dir)
    assert {f["action"] for f in _failures(two.run_dir)} == {"filtered"}


PARENT_IMPORTS = """
import sys
import treadle
result = treadle.run(sys.argv[1], out=sys.argv[2], cache="off")
print(result.summary["cells"]["done"], "langchain_openai" in sys.modules)
"""


def test_the_parent_of_workers_never_imports_the_model_client_library(tmp_path):
    """Its workers make the calls: the import (~1.5 s of a core, while the workers start) is theirs alone."""
    with SimulatorThread(SimConfig(latency_ms=5, seed=1)) as url:
        pipeline = _pipeline(tmp_path, url, workers=2)
        found = subprocess.run(
            [sys.executable, "-c", PARENT_IMPORTS, str(pipeline), str(tmp_path / "run")],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
    done, imported = found.stdout.split()
    assert int(done) > ROWS and imported == "False"
