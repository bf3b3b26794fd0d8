"""`treadle demo`: the table-QA example, offline, against the built-in simulator.

The simulator answers from the example's response book (most questions right, some wrong, some with
broken code) with realistic latency and a few injected 500s, so a run shows retries, failures and
the accuracy the book implies. The same pipeline runs against a real endpoint with `treadle run`.

The demo's files (pipeline, seed, labels, tables, response book, python columns) live in `tableqa/`
beside this module and ship in the wheel as package data, so the demo works from any install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from treadle.engine.errors import TreadleError
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline_loading import load_pipeline
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.result import RunResult
from treadle.sim import SimConfig, SimulatorThread

DEMO_DIR = Path(__file__).resolve().parent / "tableqa"
"""The demo's folder: `treadle/demo/tableqa/` in a checkout, inside the installed package otherwise."""
DEMO_SIM: dict[str, Any] = {
    "latency_ms": 300.0,
    "jitter_ms": 200.0,
    "fail_rate": 0.04,
    "seed": 7,
    "reasoning": True,
    # A provider's limits, as every real endpoint has: 300 requests a minute per model, 10 at once, no
    # headers to say so. The run lasts about 40 s, long enough to watch each model's pace settle and steer it.
    "rpm": 300,
    "limit_window_s": 2.0,
    "limit_per_model": True,
    "ratelimit_headers": False,
}


def demo_dir() -> Path:
    if not (DEMO_DIR / "pipeline.yaml").is_file():
        raise TreadleError(
            f"the demo's files are missing from {DEMO_DIR}: this install of treadle is incomplete, reinstall it"
        )
    return DEMO_DIR


@contextmanager
def demo_endpoint() -> Iterator[str]:
    """The simulator on 127.0.0.1 with the demo's response book; yields its base URL."""
    config = SimConfig(**DEMO_SIM, book=str(demo_dir() / "responses.yaml"))
    with SimulatorThread(config) as base_url:
        yield base_url


def load_demo(base_url: str) -> LoadedPipeline:
    # Two model names, so the simulator's per-model limits give each its own, as a provider would.
    env = {
        **os.environ,
        "OPENAI_BASE_URL": base_url,
        "TREADLE_PLANNER_MODEL": "sim-planner",
        "TREADLE_CODER_MODEL": "sim-coder",
    }
    return load_pipeline(demo_dir() / "pipeline.yaml", env=env)


def record_accuracy(result: RunResult) -> dict[str, Any]:
    """Accuracy over the joined rows (a row that failed counts as not correct); added to summary.json."""
    correct = pq.read_table(result.output_path, columns=["correct"]).column("correct").to_pylist()
    right = sum(1 for value in correct if value is True)
    accuracy = {
        "rows": len(correct),
        "correct": right,
        "wrong": sum(1 for value in correct if value is False),
        "not_answered": sum(1 for value in correct if value is None),
        "rate": round(right / len(correct), 4) if correct else 0.0,
    }
    result.summary["accuracy"] = accuracy
    RunDirectory(result.run_dir).write_summary(result.summary)
    return accuracy


def exit_code(result: RunResult) -> int:
    """Some questions fail on purpose (broken code, an empty table): that is the demo working, so only
    an early stop or an interrupt is an unsuccessful exit; `treadle run` on the same pipeline exits 1."""
    if result.status == "failed" and not result.message:
        return 0
    return result.exit_code
