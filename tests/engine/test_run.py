"""One run and its run directory: the files it leaves, run.json and summary.json, the default
directory it claims, and the policy each column's cells run under."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import treadle
from treadle.engine.errors import ConfigError
from treadle.engine.pipeline_loading import load_pipeline
from treadle.engine.policy import NodePolicy
from treadle.engine.resume import RunRecord
from treadle.engine.run import RunOptions, node_policy
from treadle.engine.run_dir import claim_default_run_dir, new_run_dir

COLUMNS = """\
def flaky(row):
    if row["id"] in (3, 7):
        raise ValueError(f"row {row['id']} is not ready")
    return row["id"] + 1
"""


def pipeline_file(folder: Path, rows: int = 10, **run) -> Path:
    """A pipeline file of a python column that fails rows 3 and 7 and a template over it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cols.py").write_text(COLUMNS)
    pd.DataFrame({"id": range(rows)}).to_csv(folder / "seed.csv", index=False)
    path = folder / "pipeline.yaml"
    config = {
        "seed": {"path": "seed.csv"},
        "columns": [
            {"name": "a", "kind": "python", "function": "cols:flaky"},
            {"name": "b", "kind": "template", "template": "{{ a }}!"},
        ],
        "run": {"name": "unit", "row_group_size": 4, "max_parallel": 3, "retries": 0, "salvage_rounds": 0, **run},
    }
    path.write_text(json.dumps(config))
    return path


def test_a_run_leaves_its_record_cell_states_output_failures_trace_and_summary(tmp_path):
    path = pipeline_file(tmp_path / "p")
    loaded = load_pipeline(path)
    run_dir = tmp_path / "run"
    result = treadle.RunController(loaded, RunOptions(out=run_dir, rows=9, max_parallel=2)).start().wait(30)
    assert result is not None and result.status == "failed"

    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
    assert files == [
        "cells.parquet",  # each row's cell states: groups/ and journal.jsonl are gone once every cell settled
        "failures.jsonl",
        "output.parquet",
        "run.json",
        "summary.json",
        "trace.parquet",
    ], "no temporary files are left"

    record = RunRecord.read(run_dir)
    assert (record.name, record.pipeline, record.source_hash) == ("unit", str(path.resolve()), loaded.source_hash)
    assert (record.columns, record.seed_rows, record.rows, record.max_parallel) == (["a", "b"], 10, 9, 2)
    assert dt.datetime.fromisoformat(record.started_at) <= dt.datetime.now()

    output = pq.read_table(run_dir / "output.parquet").to_pydict()
    assert output["id"] == list(range(9))
    assert output["b"] == [None if i in (3, 7) else f"{i + 1}!" for i in range(9)]
    failures = [json.loads(line) for line in (run_dir / "failures.jsonl").read_text().splitlines()]
    assert [(f["row"], f["column"], f["message"]) for f in failures] == [
        (3, "a", "row 3 is not ready"),
        (7, "a", "row 7 is not ready"),
    ]


def test_summary_json_says_how_the_run_went(tmp_path):
    path = pipeline_file(tmp_path / "p")
    run_dir = tmp_path / "run"
    result = treadle.run(path, out=run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == result.summary

    assert (summary["name"], summary["status"], summary["message"]) == ("unit", "failed", None)
    assert (summary["pipeline"], summary["pipeline_hash"]) == (str(path.resolve()), load_pipeline(path).source_hash)
    assert summary["rows"] == {"total": 10, "done": 8, "failed": 2, "dropped": 0, "unfinished": 0}
    assert summary["cells"] == {
        "waiting": 0,
        "ready": 0,
        "running": 0,
        "retry-wait": 0,
        "done": 16,
        "failed": 2,
        "blocked": 2,
        "degraded": 0,
        "dropped": 0,
    }
    assert summary["columns"]["b"]["cells"]["blocked"] == 2 and summary["columns"]["a"]["cells"]["failed"] == 2
    latency = summary["columns"]["a"]["latency_s"]
    assert set(latency) == {"p50", "p95", "p99", "mean"}
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert summary["limits"]["slots"] == {"total": 3, "peak": summary["limits"]["slots"]["peak"]}
    assert 1 <= summary["limits"]["slots"]["peak"] <= 3
    assert summary["limit_history"] == {name: [[0.0, limit["total"]]] for name, limit in summary["limits"].items()}, (
        "no limit changed"
    )
    assert 0 <= summary["first_row_s"] <= summary["wall_s"]
    assert summary["join"] is None
    assert summary["outputs"] == {
        "output": str(run_dir / "output.parquet"),
        "failures": str(run_dir / "failures.jsonl"),
        "summary": str(run_dir / "summary.json"),
    }
    assert summary["metrics"]["source"] == "trace.jsonl"
    assert summary["metrics"]["attempts"]["total"] == 18  # 10 a cells, 8 b cells (2 blocked)


def test_a_run_without_a_directory_claims_runs_name_timestamp_and_the_next_free_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    alone = claim_default_run_dir("solo")
    assert re.fullmatch(r"solo-\d{8}-\d{6}", alone.path.name) and alone.path.parent == Path("runs")
    now = dt.datetime.now()
    # The plain names of this second and the next nine are taken: a claim gets a numbered one.
    for seconds in range(10):
        stamp = (now + dt.timedelta(seconds=seconds)).strftime("%Y%m%d-%H%M%S")
        (tmp_path / "runs" / f"unit-{stamp}").mkdir(parents=True)
    claims = []
    lock = threading.Lock()

    def claim() -> None:
        directory = claim_default_run_dir("unit")
        with lock:
            claims.append(directory)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = [d.path.name for d in claims]
    assert len(set(names)) == 8, "runs started together each get their own directory"
    assert all(re.fullmatch(r"unit-\d{8}-\d{6}-\d+", name) for name in names), names
    assert all(d.claimed and d.path.parent == Path("runs") and not any(d.path.iterdir()) for d in claims)

    result = treadle.run(pipeline_file(tmp_path / "p", rows=2))
    assert result.run_dir.parent == Path("runs") and result.run_dir.name.startswith("unit-")
    assert (result.run_dir / "summary.json").is_file()


def test_a_run_that_cannot_start_gives_back_the_directory_it_claimed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TREADLE_TEST_UNSET_KEY", raising=False)
    config = {
        "seed": {"path": str(pipeline_file(tmp_path / "p").with_name("seed.csv"))},
        "models": {
            "m": {"model": "x", "base_url": "https://llm.example.com/v1", "api_key_env": "TREADLE_TEST_UNSET_KEY"}
        },
        "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ id }}"}],
        "run": {"name": "keyless"},
    }
    with pytest.raises(ConfigError, match="TREADLE_TEST_UNSET_KEY is not set"):
        treadle.start(config, base_dir=tmp_path)
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_given_directory_must_be_new_or_empty(tmp_path):
    loaded = load_pipeline(pipeline_file(tmp_path / "p"))
    assert new_run_dir(loaded, RunOptions(out=tmp_path / "new")).path == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert not new_run_dir(loaded, RunOptions(out=tmp_path / "empty")).claimed
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="the output directory is not empty"):
        new_run_dir(loaded, RunOptions(out=tmp_path / "full"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not empty"):
        new_run_dir(loaded, RunOptions(out=tmp_path / "file"))
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


def test_a_columns_policy_is_its_own_setting_else_its_models_else_the_runs(tmp_path):
    (tmp_path / "cols.py").write_text(COLUMNS)
    config = {
        "seed": {"path": str(pipeline_file(tmp_path / "p").with_name("seed.csv"))},
        "models": {
            "tuned": {"model": "x", "base_url": "http://127.0.0.1:1/v1", "retries": 7, "timeout_s": 9},
            "plain": {"model": "x", "base_url": "http://127.0.0.1:1/v1"},
        },
        "columns": [
            {"name": "own", "kind": "llm", "model": "tuned", "prompt": "{{ id }}", "retries": 0, "timeout_s": 2},
            {"name": "model", "kind": "llm", "model": "tuned", "prompt": "{{ id }}", "deadline_s": 30},
            {"name": "run", "kind": "llm", "model": "plain", "prompt": "{{ id }}", "on_failure": "skip_row"},
            {"name": "py", "kind": "python", "function": "cols:flaky", "on_failure": {"default": -1}},
        ],
        "run": {"retries": 2, "timeout_s": 50, "cell_deadline_s": 600},
    }
    loaded = treadle.load(config, base_dir=tmp_path)
    policies = {name: node_policy(loaded, node.config) for name, node in loaded.graph.nodes.items()}
    assert policies == {
        "own": NodePolicy(retries=0, timeout_s=2, on_failure="fail", deadline_s=600),
        "model": NodePolicy(retries=7, timeout_s=9, on_failure="fail", deadline_s=30),
        "run": NodePolicy(retries=2, timeout_s=50, on_failure="skip_row", deadline_s=600),
        "py": NodePolicy(retries=2, timeout_s=50, on_failure="default", default=-1, deadline_s=600),
    }
