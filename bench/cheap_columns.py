"""Cheap columns over many rows: per cell (template, sync and async python, filter) against batch.

Each runner is one treadle run of one column over `--rows` seed rows (x = 0 .. rows-1), with the
pandas baseline doing the same work beside it: `DataFrame.apply` row by row for the per-cell kinds,
the vectorized expression for the batch kinds. "engine" is the run's own wall time (summary.json
`wall_s`); "total" adds loading the seed and writing the run directory; "cpu" is the engine loop
thread's CPU time (summary.json `engine_cpu_s`), which the machine's load moves far less than wall.
Targets (issue 18): batch python within 1.5x of the bare vectorized call plus 1 us per row; a
pipeline of one batch column and one filter under 10 s for 1,000,000 rows; a per-cell template
<= 10 us per cell.

    .venv/bin/python bench/cheap_columns.py [--rows 1000000] [--row-group-size 10000] [--trace]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

HERE = Path(__file__).parent


# ---- the columns' functions (imported by the runs as `cheap_columns:<name>`) ---------------------


def inc(row: Any) -> int:
    return row["x"] + 1


async def ainc(row: Any) -> int:
    return row["x"] + 1


def binc(frame: pd.DataFrame) -> pd.Series:
    return frame["x"] + 1


def beven(frame: pd.DataFrame) -> pd.Series:
    return frame["x"] % 2 == 0


# ---- runners --------------------------------------------------------------------------------------

RUNNERS: dict[str, tuple[list[dict[str, Any]], Callable[[pd.DataFrame], Any]]] = {
    "template (per cell)": (
        [{"name": "t", "kind": "template", "template": "{{ x }}!"}],
        lambda df: df.apply(lambda r: f"{r['x']}!", axis=1),
    ),
    "sync python (per cell)": (
        [{"name": "p", "kind": "python", "function": "cheap_columns:inc"}],
        lambda df: df.apply(inc, axis=1),
    ),
    "async python (per cell)": (
        [{"name": "p", "kind": "python", "function": "cheap_columns:ainc"}],
        lambda df: df.apply(inc, axis=1),
    ),
    "filter expression (per cell)": (
        [{"name": "f", "kind": "filter", "expression": "{{ x % 2 == 0 }}"}],
        lambda df: df[df.apply(lambda r: r["x"] % 2 == 0, axis=1)],
    ),
    "batch python": (
        [{"name": "b", "kind": "python", "function": "cheap_columns:binc", "batch": True}],
        lambda df: df["x"] + 1,
    ),
    "batch python + batch filter": (
        [
            {"name": "b", "kind": "python", "function": "cheap_columns:binc", "batch": True},
            {"name": "f", "kind": "filter", "function": "cheap_columns:beven", "batch": True},
        ],
        lambda df: (df.assign(b=df["x"] + 1))[df["x"] % 2 == 0],
    ),
}


def run_treadle(columns: list[dict[str, Any]], seed: Path, args: argparse.Namespace) -> tuple[float, float, float]:
    import treadle

    config = {
        "seed": {"path": str(seed)},
        "columns": columns,
        "run": {"row_group_size": args.row_group_size, "row_groups_in_flight": 4, "trace": args.trace},
    }
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = treadle.run(config, base_dir=HERE, out=Path(out) / "run")
        total = time.perf_counter() - started
    assert result.status == "done", result.message
    return float(result.summary["wall_s"]), total, float(result.summary["engine_cpu_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--row-group-size", type=int, default=10_000)
    parser.add_argument("--trace", action="store_true", help="record a trace (off by default)")
    parser.add_argument("--only", help="run only the runners whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.parquet"
        frame = pd.DataFrame({"x": range(args.rows)})
        frame.to_parquet(seed)
        print(f"{args.rows:,} rows, row groups of {args.row_group_size:,}, tracing {'on' if args.trace else 'off'}")
        print(
            f"{'runner':<30} {'engine s':>9} {'total s':>8} {'us/row':>7} {'cpu s':>6} "
            f"{'pandas s':>9} {'us/row':>7} {'ratio':>6}"
        )
        for name, (columns, baseline) in RUNNERS.items():
            if args.only and args.only not in name:
                continue
            started = time.perf_counter()
            baseline(frame)
            bare = time.perf_counter() - started
            engine, total, cpu = run_treadle(columns, seed, args)
            per_row = 1e6 / args.rows
            print(
                f"{name:<30} {engine:>9.2f} {total:>8.2f} {engine * per_row:>7.2f} {cpu:>6.2f} {bare:>9.3f} "
                f"{bare * per_row:>7.2f} {engine / bare:>5.1f}x"
            )


if __name__ == "__main__":
    main()
