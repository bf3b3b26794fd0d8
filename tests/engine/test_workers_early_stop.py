"""--workers N: early stop and salvage decided over every worker's cells, as one process decides them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

import treadle
from treadle.sim import SimConfig, SimulatorThread


def _seed(tmp_path: Path, rows: int) -> str:
    path = tmp_path / "seed.csv"
    pd.DataFrame({"q": [f"question {i}" for i in range(rows)]}).to_csv(path, index=False)
    return str(path)


def test_two_workers_stop_early_after_the_runs_window_of_failed_attempts(tmp_path):
    # Every answer fails. One process stops after 40 failed attempts; each worker alone would need 40
    # of its own (80 in all). The parent counts both workers' attempts in one window of 40.
    sim = SimulatorThread(SimConfig(fail_rate=1.0, latency_ms=100))
    with sim as url:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(
            json.dumps(
                {
                    "seed": {"path": _seed(tmp_path, 300)},
                    "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 2}},
                    "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"}],
                    "run": {
                        "retries": 2,
                        "backoff_s": 0,
                        "early_stop": {"window": 40, "error_rate": 0.9},
                        "row_group_size": 10,
                        "workers": 2,
                    },
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
    assert "stopped early: 40 of the last 40 attempts failed (last error: " in proc.stderr
    assert "Traceback" not in proc.stderr
    assert requests < 62, "each worker counted only its own attempts (about 80 in all)"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["message"].startswith("stopped early")


def test_two_workers_salvage_in_one_round_at_the_end_as_one_process_does(tmp_path):
    # A fifth of the first attempts fail (each prompt's attempts are seeded): with no retries they fail
    # for good, and the salvage round runs them once more, after every row group is written.
    def run(out: str, workers: int) -> tuple[treadle.RunResult, list[str]]:
        with SimulatorThread(SimConfig(fail_rate=0.2, latency_ms=5, seed=7)) as url:
            config = {
                "seed": {"path": _seed(tmp_path, 120)},
                "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 8}},
                "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}", "retries": 0}],
                "run": {"row_group_size": 10, "row_groups_in_flight": 2, "early_stop": None, "salvage_rounds": 1},
            }
            controller = treadle.start(config, out=tmp_path / out, workers=workers, cache="off")
            events = controller.subscribe()
            result = controller.wait()
        seen = []
        while not events.empty():
            seen.append(events.get_nowait().type)
        assert result is not None
        return result, seen

    one, one_events = run("one", 1)
    two, two_events = run("two", 2)
    assert one_events.count("salvage") == two_events.count("salvage") == 1
    assert one_events.index("salvage") > one_events.index("cell_failed")
    assert two.summary["rows"] == one.summary["rows"] and two.summary["cells"] == one.summary["cells"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(one.run_dir / "output.parquet").sort_values("q").reset_index(drop=True),
        pd.read_parquet(two.run_dir / "output.parquet").sort_values("q").reset_index(drop=True),
    )
