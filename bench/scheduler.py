"""Engine overhead per cell: 200,000 no-op async cells (2 dependent columns) through treadle vs a
plain `asyncio.gather` + `Semaphore` script over the same functions, in one run.

Each runner runs `--repeat` times, interleaved (baseline, tracing off, tracing on, then again), and
the table shows each one's best run: the machine's noise only ever adds time, so the best of a few
runs is the steadiest estimate of what the code costs, and interleaving exposes every runner to the
same background load. The CPU line adds up this process's CPU time per runner (all its threads,
the trace thread that makes and writes the trace's Arrow batches included): the work each one
costs, which the machine's load moves far less than wall time. "engine loop thread CPU" is
summary.json's `engine_cpu_s`: what tracing costs the thread that runs the cells, without the time
it loses to the other threads and processes sharing the machine's cores. bench/tracing_cost.py
counts the same pipeline's instructions and cache misses under valgrind instead: counts that repeat
run to run.

    python bench/scheduler.py [--rows 100000] [--parallel 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import noop_cols  # noqa: E402

import treadle  # noqa: E402


def cpu_s() -> float:
    """CPU seconds of this process (every thread)."""
    return time.process_time()


async def baseline(rows: list[dict], parallel: int) -> None:
    semaphore = asyncio.Semaphore(parallel)

    async def one(row: dict) -> None:
        async with semaphore:
            row["first"] = await noop_cols.first(row)
            row["second"] = await noop_cols.second(row)

    await asyncio.gather(*(one(row) for row in rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cells = args.rows * 2

    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.parquet"
        pd.DataFrame({"id": range(args.rows)}).to_parquet(seed)
        runs: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
        bases: list[float] = []
        cpu: dict[str, list[float]] = {"baseline": [], "off": [], "on": []}
        for attempt in range(args.repeat):
            rows = [{"id": i} for i in range(args.rows)]
            t0, c0 = time.perf_counter(), cpu_s()
            asyncio.run(baseline(rows, args.parallel))
            bases.append(time.perf_counter() - t0)
            cpu["baseline"].append(cpu_s() - c0)
            for trace in (False, True) if attempt % 2 == 0 else (True, False):  # neither always goes second
                loaded = treadle.load(noop_cols.pipeline(str(seed), args.parallel, trace), base_dir=HERE)
                t0, c0 = time.perf_counter(), cpu_s()
                result = treadle.run(loaded, out=Path(tmp) / f"run-{trace}-{attempt}")
                total = time.perf_counter() - t0
                cpu["on" if trace else "off"].append(cpu_s() - c0)
                assert result.status == "done", result.summary
                runs[trace].append((result.summary["wall_s"], total, result.summary["engine_cpu_s"]))
        base = min(bases)
        best = {trace: tuple(min(column) for column in zip(*runs[trace], strict=True)) for trace in runs}

    title = f"{cells:,} no-op async cells ({args.rows:,} rows x 2 columns), parallel {args.parallel}"
    title += f", best of {args.repeat}"
    table = Table(title=title)
    for header in ("runner", "wall s", "us per cell", "cells/s", "vs baseline"):
        table.add_column(header, justify="right")
    table.add_row(
        "asyncio.gather + Semaphore",
        f"{base:.2f}",
        f"{base / cells * 1e6:.1f}",
        f"{cells / base:,.0f}",
        "1.00x",
    )
    for trace in (False, True):
        scheduling, total, _ = best[trace]
        label = "tracing on" if trace else "tracing off"
        for name, wall in ((f"treadle, {label} (scheduling)", scheduling), (f"treadle, {label} (with outputs)", total)):
            table.add_row(
                name, f"{wall:.2f}", f"{wall / cells * 1e6:.1f}", f"{cells / wall:,.0f}", f"{wall / base:.2f}x"
            )
    Console(width=120).print(table)
    for index, what in ((0, "scheduling wall"), (1, "with outputs"), (2, "engine loop thread CPU")):
        # Per round (the two runs next to each other share the machine's load at the time), then the median.
        costs = sorted(on[index] / off[index] - 1 for on, off in zip(runs[True], runs[False], strict=True))
        print(
            f"cost of tracing ({what}): best vs best {best[True][index] / best[False][index] - 1:+.1%}, "
            f"median of rounds {statistics.median(costs):+.1%} (rounds: {', '.join(f'{c:+.0%}' for c in costs)})"
        )
    medians = {name: statistics.median(values) for name, values in cpu.items()}
    print(
        "CPU s per run incl. outputs (median): "
        + ", ".join(f"{name} {value:.2f}" for name, value in medians.items())
        + f"; tracing costs {medians['on'] / medians['off'] - 1:+.1%} CPU"
    )


if __name__ == "__main__":
    main()
