"""Loop lag under load: is the engine loop responsive while a run holds 1,000 model calls, blocking sync
cells and wide template writes at once?

Each round is `treadle run --no-ui` in its own process (so the measurement is the engine's alone) on
1,000 rows: an llm column (the simulator in its own process, answers spread over 3 +- 1.5 s, as real
latencies are: the loop is busy, not saturated), a sync python column that blocks 20 ms per cell
(threads), and a template that writes 300 copies of the answer per cell. The response cache is off
(else every round after the first would be answered from it). Printed per round: the
engine's wall time, the most model calls in flight at once (summary.json `limits.model:m.peak`) and the
loop lag (`loop_lag_ms`: how late the loop woke up). Targets (issue 5): p99 lag < 50 ms with >= 900
calls in flight. These used to be asserted in tests/engine/test_context.py, where a loaded machine made
them flaky; the test keeps what holds at any speed.

    .venv/bin/python bench/loop_lag.py [--rounds 3] [--rows 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from treadle.sim import SimConfig, SimulatorProcess  # noqa: E402

BLOCKING = """\
import time


def blocking_short(row):
    time.sleep(0.02)  # a blocking call, the kind of work sync columns do
    return row["id"]
"""


def write_pipeline(workdir: Path, url: str, rows: int) -> Path:
    (workdir / "blocking.py").write_text(BLOCKING)
    pd.DataFrame({"id": range(rows), "q": [f"question {i}" for i in range(rows)]}).to_csv(
        workdir / "s.csv", index=False
    )
    pipeline = workdir / "pipeline.yaml"
    pipeline.write_text(
        json.dumps(
            {
                "seed": {"path": "s.csv"},
                "models": {"m": {"model": "sim", "base_url": url, "max_parallel": rows}},
                "columns": [
                    {"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
                    {"name": "slow", "kind": "python", "function": "blocking:blocking_short", "depends_on": ["a"]},
                    {"name": "wide", "kind": "template", "template": "{% for i in range(300) %}{{ a }} {% endfor %}"},
                ],
                "run": {"max_parallel": rows, "row_group_size": max(rows // 10, 1), "row_groups_in_flight": 10},
            }
        )
    )
    return pipeline


def one_round(workdir: Path, pipeline: Path, i: int) -> dict:
    out = workdir / f"run{i}"
    proc = subprocess.run(
        [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--no-cache", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"round {i} failed:\n{proc.stderr}")
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        SimulatorProcess(SimConfig(latency_ms=3000, jitter_ms=1500, seed=1)) as url,
    ):
        workdir = Path(tmp)
        pipeline = write_pipeline(workdir, url, args.rows)
        for i in range(args.rounds):
            summary = one_round(workdir, pipeline, i)
            lag = summary["loop_lag_ms"]
            peak = summary["limits"]["model:m"]["peak"]
            rows.append((i + 1, summary["wall_s"], peak, lag["p50"], lag["p99"], lag["max"]))
    print(f"{args.rows:,} rows: llm (3 +- 1.5 s) + blocking sync (20 ms) + wide template, {args.rounds} rounds")
    headers = ("round", "wall s", "peak calls", "lag p50 ms", "lag p99 ms", "lag max ms")
    print(" | ".join(f"{h:>10}" for h in headers))
    for r, wall, peak, p50, p99, top in rows:
        print(f"{r:>10} | {wall:>10.2f} | {peak:>10,} | {p50:>10.2f} | {p99:>10.2f} | {top:>10.2f}")
    p99s = [r[4] for r in rows]
    print(f"p99 lag: median {statistics.median(p99s):.2f} ms, worst {max(p99s):.2f} ms (target < 50 ms)")


if __name__ == "__main__":
    main()
