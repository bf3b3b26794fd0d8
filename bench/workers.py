"""One engine process against `--workers N` on the same LLM workload (issue 20).

Workload: ROWS rows x 2 dependent LLM columns (the second prompt quotes the first answer), so
2 x ROWS chat completions, against the simulator in its own process answering after LATENCY ms,
max_parallel 1024 (run and model), row groups of 100 with enough in flight (12) that the row-group
limit is not what bounds the calls in flight. The response cache is off. Each worker count runs
REPEAT times, taking turns; the table shows each one's best run by wall time.

Columns: wall (summary.json `wall_s`: from the run's start, worker start-up included), calls wall
(first request to last answer at the simulator: the cells alone), calls/s over the wall, the endpoint
bound (calls x latency / 1024), max requests in flight at the simulator, engine CPU (summary.json
`engine_cpu_s`: the engine loops' threads, the parent's and every worker's), client CPU (this process
and its worker processes, whole), simulator CPU (its process).

    .venv/bin/python bench/workers.py [--rows 10000] [--latency-ms 200] [--workers 1,2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import urllib.request
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import treadle  # noqa: E402
from treadle.sim import SimConfig, SimulatorProcess  # noqa: E402

PARALLEL = 1024


def _pipeline(workdir: Path, url: str, rows: int) -> Path:
    pd.DataFrame({"id": range(rows), "q": [f"question {i}" for i in range(rows)]}).to_csv(
        workdir / "seed.csv", index=False
    )
    config = {
        "seed": {"path": "seed.csv"},
        "models": {"m": {"model": "bench-model", "base_url": url, "max_parallel": PARALLEL}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "Answer the question: {{ q }}"},
            {"name": "b", "kind": "llm", "model": "m", "prompt": "Check this answer: {{ a }}"},
        ],
        "run": {"max_parallel": PARALLEL, "row_group_size": 100, "row_groups_in_flight": 12},
    }
    path = workdir / "pipeline.yaml"
    path.write_text(json.dumps(config))
    return path


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_cpu_s() -> float:
    """This process and its waited-for children (the workers): user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _get(url: str) -> object:
    with urllib.request.urlopen(url) as answer:
        return json.loads(answer.read())


def run_once(pipeline: Path, out: Path, workers: int, sim_url: str, sim_pid: int) -> dict[str, float]:
    root = sim_url.removesuffix("/v1")
    urllib.request.urlopen(urllib.request.Request(root + "/stats/reset", method="POST")).close()
    since = _get(root + "/requests?since=1000000000")["next"]  # type: ignore[index]
    cpu, sim_cpu = _client_cpu_s(), _process_cpu_s(sim_pid)
    result = treadle.run(pipeline, out=out, cache="off", workers=workers)
    cpu, sim_cpu = _client_cpu_s() - cpu, _process_cpu_s(sim_pid) - sim_cpu
    assert result.status == "done", result.message
    stats = _get(root + "/stats")
    requests = _get(f"{root}/requests?since={since}")["requests"]  # type: ignore[index]
    calls = stats["requests_total"]  # type: ignore[index]
    calls_wall = max(r["t_end"] for r in requests) - min(r["t"] for r in requests)  # type: ignore[union-attr]
    wall = result.summary["wall_s"]
    return {
        "wall": wall,
        "calls_wall": calls_wall,
        "calls": calls,
        "calls_per_s": calls / wall,
        "max_in_flight": stats["max_in_flight"],  # type: ignore[index]
        "engine_cpu": result.summary["engine_cpu_s"],
        "client_cpu": cpu,
        "sim_cpu": sim_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    best: dict[int, dict[str, float]] = {}
    sim = SimulatorProcess(SimConfig(latency_ms=args.latency_ms))
    with sim as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        pipeline = _pipeline(workdir, url, args.rows)
        pid = sim.pid
        assert pid is not None
        for round_ in range(args.repeat):
            for workers in counts if round_ % 2 == 0 else counts[::-1]:
                measured = run_once(pipeline, workdir / f"run-{workers}-{round_}", workers, url, pid)
                print(
                    f"round {round_ + 1}, workers {workers}: " + ", ".join(f"{k} {v:.2f}" for k, v in measured.items())
                )
                if workers not in best or measured["wall"] < best[workers]["wall"]:
                    best[workers] = measured
    _print_table(best, args.rows, args.latency_ms)


def _print_table(best: dict[int, dict[str, float]], rows: int, latency_ms: float) -> None:
    calls = 2 * rows
    bound = calls * latency_ms / 1000 / PARALLEL
    table = Table(title=f"{rows:,} rows x 2 dependent llm columns, {latency_ms:.0f} ms, max_parallel {PARALLEL}, best")
    for name in ("workers", "wall s", "calls wall s", "calls/s", "vs 1", "wall / bound", "max in flight",
                 "engine CPU s", "client CPU s", "sim CPU s"):  # fmt: skip
        table.add_column(name, justify="right")
    base = best[min(best)]["calls_per_s"]
    for workers, m in sorted(best.items()):
        table.add_row(
            str(workers),
            f"{m['wall']:.2f}",
            f"{m['calls_wall']:.2f}",
            f"{m['calls_per_s']:,.0f}",
            f"{m['calls_per_s'] / base:.2f}x",
            f"{m['wall'] / bound:.2f}",
            f"{m['max_in_flight']:.0f}",
            f"{m['engine_cpu']:.2f}",
            f"{m['client_cpu']:.2f}",
            f"{m['sim_cpu']:.2f}",
        )
    console = Console(width=160)
    console.print(table)
    console.print(
        f"endpoint bound {bound:.2f} s ({calls:,} calls x {latency_ms:.0f} ms / {PARALLEL}); cores {os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
