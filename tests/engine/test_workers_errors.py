"""--workers N: an error in handling a message, in the parent or in a worker, ends the run with one error
line and a non-zero exit instead of a run that hangs or goes on; what was written is kept for resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.cli import main
from treadle.engine.workers.parent import ParentRun
from treadle.sim import SimConfig, SimulatorThread

ROWS = 120

# Imported by the parent and by each worker (its python column); in a worker process it makes the
# worker's second Assign fail after the worker took the groups (so a run that ignored it would go on).
FAULTY = """
import sys

from treadle.engine.workers.messages import Assign

main = sys.modules["__main__"]  # a worker process is forked from the fork server: its main module
if getattr(getattr(main, "__spec__", None), "name", None) == "treadle.engine.workers.forkserver":
    from treadle.engine.workers.worker import WorkerLoop

    handle, assigned = WorkerLoop.handle, []

    def failing(self, message):
        handle(self, message)
        if isinstance(message, Assign):
            assigned.append(message)
            if len(assigned) == 2:
                raise RuntimeError("the worker tripped")

    WorkerLoop.handle = failing


def size(row):
    return len(row["a"])
"""


def _pipeline(tmp_path: Path, url: str) -> Path:
    pd.DataFrame({"q": [f"question {i}" for i in range(ROWS)]}).to_csv(tmp_path / "s.csv", index=False)
    (tmp_path / "faulty.py").write_text(FAULTY)
    config = {
        "seed": {"path": "s.csv"},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 4}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
            {"name": "n", "kind": "python", "function": "faulty:size", "depends_on": ["a"]},
        ],
        "run": {"row_group_size": 10, "row_groups_in_flight": 2},
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(config))
    return path


def _resumed_output(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> pd.DataFrame:
    assert main(["resume", str(run_dir), "--no-ui", "--workers", "1"]) == 0, capsys.readouterr().err
    return pd.read_parquet(run_dir / "output.parquet").sort_values("q").reset_index(drop=True)


def test_an_error_handling_a_command_in_a_worker_ends_the_run(tmp_path, capsys):
    with SimulatorThread(SimConfig(latency_ms=10, seed=1)) as url:
        pipeline, run_dir = _pipeline(tmp_path, url), tmp_path / "run"
        code = main(["run", str(pipeline), "--no-ui", "--no-cache", "--workers", "2", "--out", str(run_dir)])
        out, err = capsys.readouterr()
        assert code == 1, out + err
        assert "internal error handling Assign in a worker: RuntimeError: the worker tripped" in err
        assert "Traceback" not in err
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and summary["rows"]["unfinished"] > 0
        output = _resumed_output(run_dir, capsys)
    assert len(output) == ROWS and output["n"].notna().all()


def test_an_error_handling_a_workers_message_in_the_parent_ends_the_run(tmp_path, capsys, monkeypatch):
    written = ParentRun._group_written
    calls = []

    def failing(self, handle, message):
        calls.append(message.group)
        if len(calls) == 2:
            raise RuntimeError("the parent tripped")
        written(self, handle, message)

    monkeypatch.setattr(ParentRun, "_group_written", failing)
    with SimulatorThread(SimConfig(latency_ms=10, seed=1)) as url:
        pipeline, run_dir = _pipeline(tmp_path, url), tmp_path / "run"
        controller = treadle.start(pipeline, out=run_dir, workers=2, cache="off")
        result = controller.wait(timeout=120)
        assert result is not None, "the run waited for a group the parent never counted"
        assert result.status == "failed"
        assert result.summary["message"].startswith("internal error handling worker ")
        assert result.summary["message"].endswith("'s GroupWritten: RuntimeError: the parent tripped")
        monkeypatch.undo()
        output = _resumed_output(run_dir, capsys)
    assert len(output) == ROWS and output["n"].notna().all()
