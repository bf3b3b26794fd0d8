"""Interrupts, a killed run against the simulator, and values of unusual size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

import treadle
from treadle.cli import main
from treadle.engine.analysis.metrics import run_metrics
from treadle.engine.journal import replay
from treadle.engine.trace_reader import TraceReader
from treadle.sim import SimConfig, SimulatorThread

DATA = Path(__file__).parent / "data"


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_journal_consistent(tmp_path):
    run_dir = tmp_path / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle.cli", "run", str(DATA / "cli" / "stuck" / "pipeline.yaml"), "--no-ui",
         "--out", str(run_dir), "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["type"] == "progress":
            break
    proc.send_signal(signal.SIGINT)
    for line in proc.stdout:  # the first interrupt is taken: running cells get their grace period
        if json.loads(line)["type"] == "stopping":
            break
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - started < 10, "the second interrupt did not wait out the 30 s grace period"
    assert "Traceback" not in stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    done = replay(run_dir / "journal.jsonl").done
    output = pd.read_parquet(run_dir / "output.parquet")
    assert summary["cells"]["done"] == sum(len(columns) for columns in done.values()) > 0
    assert output["label"].notna().sum() == summary["columns"]["label"]["cells"]["done"]


def test_sigkill_mid_llm_run_then_resume_requests_no_finished_cell_again(tmp_path, capsys):
    pd.DataFrame({"id": range(300), "q": [f"question {i}" for i in range(300)]}).to_csv(tmp_path / "s.csv", index=False)
    # The simulator on a thread of this process, the run in a process of its own (to be killed), the
    # resume through the CLI's entry point here: one process start-up, not three.
    sim = SimulatorThread(SimConfig(latency_ms=60, seed=3))
    with sim as url:
        pipeline = tmp_path / "pipeline.yaml"
        pipeline.write_text(
            json.dumps(
                {
                    "seed": {"path": "s.csv"},
                    "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 16}},
                    "columns": [
                        {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
                        {"name": "b", "kind": "llm", "model": "m", "prompt": "again {{ a }}"},
                    ],
                    "run": {"max_parallel": 16, "row_group_size": 20},
                }
            )
        )
        run_dir = tmp_path / "run"
        proc = subprocess.Popen(
            [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(run_dir),
             "--events", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ),
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["type"] == "progress":
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        finished_before = sum(len(c) for c in replay(run_dir / "journal.jsonl").done.values())
        assert 0 < finished_before < 600
        assert main(["resume", str(run_dir), "--no-ui"]) == 0, capsys.readouterr().err
        stats = sim.stats()
    # Every cell was requested once, except those in flight at the kill (at most the 16 slots).
    assert 600 <= stats["requests_total"] <= 600 + 16
    output = pd.read_parquet(run_dir / "output.parquet")
    assert len(output) == 300 and output["b"].notna().all()


def test_a_huge_cell_value_goes_through(tmp_path):
    (tmp_path / "big.py").write_text("def big(row):\n    return 'x' * (30_000_000 if row['id'] == 1 else 10)\n")
    pd.DataFrame({"id": range(3)}).to_csv(tmp_path / "s.csv", index=False)
    config = {
        "seed": {"path": "s.csv"},
        "columns": [
            {"name": "v", "kind": "python", "function": "big:big"},
            {"name": "n", "kind": "template", "template": "{{ v | length }}"},
        ],
    }
    result = treadle.run(config, base_dir=tmp_path, out=tmp_path / "run")
    assert result.status == "done"
    assert result.output["n"].tolist() == ["10", "30000000", "10"]


def _small_files(limit: int):
    def apply() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_an_output_directory_that_fills_up_stops_the_run_with_one_line(tmp_path):
    hello = Path(__file__).parents[1] / "examples" / "hello" / "pipeline.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "treadle.cli", "run", str(hello), "--no-ui", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, preexec_fn=_small_files(150_000),
    )  # fmt: skip
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "cannot write" in proc.stderr and "File too large" in proc.stderr
    assert replay(tmp_path / "r" / "journal.jsonl").done, "what was journaled before the disk filled is kept"


def test_sigkill_mid_run_leaves_a_readable_trace_and_resume_continues_it(tmp_path):
    """A killed run's trace stream reads up to its last whole batch (a live report reads it too); the
    resume adds its session and folds both into trace.parquet."""
    rows = 3_000
    stuck = tmp_path / "stuck"
    stuck.touch()
    (tmp_path / "cols.py").write_text(
        "import asyncio\nfrom pathlib import Path\n\n"
        "async def quick(row):\n    return row['id']\n\n"
        "async def stuck_at_end(row):\n"
        f"    if row['id'] >= {rows - 10} and Path({str(stuck)!r}).exists():\n        await asyncio.Event().wait()\n"
        "    return row['id']\n"
    )
    pd.DataFrame({"id": range(rows)}).to_csv(tmp_path / "s.csv", index=False)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        json.dumps(
            {
                "seed": {"path": "s.csv"},
                "columns": [
                    {"name": "a", "kind": "python", "function": "cols:quick"},
                    {"name": "b", "kind": "python", "function": "cols:stuck_at_end", "depends_on": ["a"]},
                ],
                "run": {"row_group_size": 1000},
            }
        )
    )
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(run_dir),
         "--events", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    settled = 2 * rows - 10
    progress_seen = 0
    for line in proc.stdout:
        event = json.loads(line)
        if event["type"] == "progress" and event["cells"].get("done", 0) >= settled:
            progress_seen += 1
            if progress_seen == 2:  # a second later: the trace was flushed several times since
                break
    assert run_metrics(run_dir)["attempts"]["done"] == settled  # the live run's trace, as report reads it
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("trace")) == ["trace.arrows"]
    killed = list(TraceReader(run_dir))
    assert [t["seq"] for t in killed] == list(range(1, settled + 1))

    stuck.unlink()
    resumed = subprocess.run(
        [sys.executable, "-m", "treadle.cli", "resume", str(run_dir), "--no-ui"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("trace")) == ["trace.parquet"]
    traces = list(TraceReader(run_dir))
    assert traces[:settled] == killed
    assert [t["seq"] for t in traces[settled:]] == list(range(1, 11)) and {t["session"] for t in traces} == {0, 1}
    done = [(t["row"], t["column"]) for t in traces if t["status"] == "done"]
    assert sorted(done) == sorted((row, column) for row in range(rows) for column in "ab")
