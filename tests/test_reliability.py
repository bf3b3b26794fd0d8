"""Failure policies, salvage, early stop, and runs against a faulty simulator (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine.trace_reader import TraceReader
from treadle.sim import SimConfig, SimulatorThread

FRAGILE = Path(__file__).parent / "data" / "reliability"


def seed(tmp_path: Path, rows: int) -> str:
    path = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(rows), "q": [f"question {i}" for i in range(rows)]}).to_csv(path, index=False)
    return str(path)


def test_on_failure_default_degrades_the_cell_and_its_dependents_run(tmp_path):
    config = {
        "seed": {"path": seed(tmp_path, 6)},
        "columns": [
            {"name": "a", "kind": "python", "function": "fragile:fails_on_odd_rows", "on_failure": {"default": -1}},
            {"name": "b", "kind": "template", "template": "{{ a }}!"},
        ],
    }
    result = treadle.run(config, base_dir=FRAGILE, out=tmp_path / "run")
    assert result.status == "done" and result.exit_code == 0
    assert result.output["b"].tolist() == ["0!", "-1!", "20!", "-1!", "40!", "-1!"]
    assert result.summary["cells"]["degraded"] == 3
    assert result.summary["columns"]["a"]["cells"]["degraded"] == 3
    assert result.summary["rows"] == {"total": 6, "done": 6, "failed": 0, "dropped": 0, "unfinished": 0}
    assert [(f["row"], f["action"]) for f in result.failures] == [(1, "default"), (3, "default"), (5, "default")]


def test_on_failure_skip_row_leaves_the_row_out_with_the_reason(tmp_path):
    config = {
        "seed": {"path": seed(tmp_path, 6)},
        "columns": [
            {"name": "a", "kind": "python", "function": "fragile:fails_on_odd_rows", "on_failure": "skip_row"},
            {"name": "b", "kind": "template", "template": "{{ a }}!"},
        ],
    }
    result = treadle.run(config, base_dir=FRAGILE, out=tmp_path / "run")
    assert result.status == "done"
    assert result.output["id"].tolist() == [0, 2, 4]
    assert result.summary["rows"]["dropped"] == 3
    assert {(f["row"], f["action"], f["message"]) for f in result.failures} == {
        (1, "skip_row", "row 1 is odd"),
        (3, "skip_row", "row 3 is odd"),
        (5, "skip_row", "row 5 is odd"),
    }


def test_a_column_may_take_more_retries_than_the_run(tmp_path):
    config = {
        "seed": {"path": seed(tmp_path, 10)},
        "columns": [{"name": "a", "kind": "python", "function": "fragile:flaky_twice", "retries": 2}],
        "run": {"retries": 0, "backoff_s": 0, "salvage_rounds": 0},
    }
    result = treadle.run(config, base_dir=FRAGILE, out=tmp_path / "run")
    assert result.status == "done"
    assert result.output["a"].tolist() == list(range(10))


def test_salvage_gives_cells_that_spent_their_retries_another_round(tmp_path):
    with SimulatorThread(SimConfig(fail_rate=0.5, seed=11)) as url:
        config = {
            "seed": {"path": seed(tmp_path, 30)},
            "models": {"m": {"model": "sim", "base_url": url}},
            "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"}],
            "run": {"retries": 0, "backoff_s": 0, "salvage_rounds": 0, "early_stop": None},
        }
        without = treadle.run(config, base_dir=tmp_path, out=tmp_path / "without")
        config["run"]["salvage_rounds"] = 3
        salvaged = treadle.run(config, base_dir=tmp_path, out=tmp_path / "with")
    assert without.summary["rows"]["failed"] > 5
    assert salvaged.summary["rows"]["failed"] < without.summary["rows"]["failed"]


def test_faults_at_20_percent_every_row_is_accounted_for(tmp_path):
    faults = SimConfig(fail_rate=0.05, hang_rate=0.05, malformed_rate=0.05, drop_rate=0.05, latency_ms=5, seed=5)
    with SimulatorThread(faults) as url:
        config = {
            "seed": {"path": seed(tmp_path, 200)},
            "models": {"m": {"model": "sim", "base_url": url, "timeout_s": 0.5, "max_parallel": 32}},
            "columns": [
                {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
                {"name": "b", "kind": "llm", "model": "m", "prompt": "again: {{ a }}"},
            ],
            "run": {"retries": 4, "backoff_s": 0.01},
        }
        result = treadle.run(config, base_dir=tmp_path, out=tmp_path / "run")
    rows = result.summary["rows"]
    assert rows["total"] == 200 and rows["unfinished"] == 0
    assert rows["done"] + rows["failed"] + rows["dropped"] == 200
    output = pd.read_parquet(tmp_path / "run" / "output.parquet")
    assert len(output) == 200 - rows["dropped"]
    failed_rows = {f["row"] for f in result.failures}
    assert len(failed_rows) == rows["failed"]
    assert all(f["message"] for f in result.failures)
    assert output["b"].notna().sum() == rows["done"]
    traces = list(TraceReader(tmp_path / "run"))
    assert {t["status"] for t in traces} >= {"done", "retry"}


def test_a_429_storm_is_waited_out(tmp_path):
    with SimulatorThread(SimConfig(rpm=120, seed=2)) as url:
        config = {
            "seed": {"path": seed(tmp_path, 124)},
            # Not adaptive: each cell waits out its own 429 (an adaptive model would pace to the headers).
            "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 16, "adaptive": False}},
            "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"}],
            "run": {"retries": 1},
        }
        result = treadle.run(config, base_dir=tmp_path, out=tmp_path / "run")
    assert result.status == "done"
    traces = list(TraceReader(tmp_path / "run"))
    retries = [t for t in traces if t["status"] == "retry"]
    assert len(retries) >= 4
    # Each 429 carried a Retry-After; the trace says what was honoured, and the next attempt waited it.
    assert all(t["retry_after_s"] > 0 for t in retries)
    assert all(t["retry_after_s"] is None for t in traces if t["status"] == "done")
    attempts = {(t["row"], t["attempt"]): t for t in traces}
    for t in retries:
        following = attempts[(t["row"], t["attempt"] + 1)]
        assert following["t_ready"] >= t["t_end"] + t["retry_after_s"] - 1e-3
    waited = result.summary["metrics"]["errors"]["retry_after"]
    assert waited == {
        "waits": len(retries),
        "total_s": pytest.approx(sum(t["retry_after_s"] for t in retries), abs=1e-3),
    }


def test_an_endpoint_that_fails_everything_stops_the_run_early(tmp_path):
    sim = SimulatorThread(SimConfig(fail_rate=1.0))
    with sim as url:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(
            json.dumps(
                {
                    "seed": {"path": seed(tmp_path, 300)},
                    "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 4}},
                    "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"}],
                    "run": {"retries": 2, "backoff_s": 0, "early_stop": {"window": 40, "error_rate": 0.9}},
                }
            )
        )
        proc = subprocess.run(
            [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ),
        )
        requests = sim.stats()["requests_total"]
    assert proc.returncode == 1, proc.stderr
    assert "stopped early: 40 of the last 40 attempts failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert requests < 80, "it stopped instead of trying all 900 attempts"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["message"].startswith("stopped early")


def test_a_cell_deadline_ends_retries_early(tmp_path):
    with SimulatorThread(SimConfig(fail_rate=1.0)) as url:
        config = {
            "seed": {"path": seed(tmp_path, 2)},
            "models": {"m": {"model": "sim", "base_url": url}},
            "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}", "deadline_s": 0.5}],
            "run": {"retries": 50, "backoff_s": 0.2, "salvage_rounds": 0, "early_stop": None},
        }
        result = treadle.run(config, base_dir=tmp_path, out=tmp_path / "run")
    assert result.status == "failed"
    assert all("cell deadline of 0.5 s reached" in f["message"] for f in result.failures)
    assert all(f["attempts"] < 10 for f in result.failures)
