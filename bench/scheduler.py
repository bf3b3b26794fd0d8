"""Engine overhead per cell: 200,000 no-op async cells (2 dependent columns) through treadle vs a
plain `asyncio.gather` + `Semaphore` script over the same functions, in one run.

    python bench/scheduler.py [--rows 100000] [--parallel 64]
"""

from __future__ import annotations

import argparse
import asyncio
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
    args = parser.parse_args()
    cells = args.rows * 2

    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.parquet"
        pd.DataFrame({"id": range(args.rows)}).to_parquet(seed)
        config = {
            "seed": {"path": str(seed)},
            "columns": [
                {"name": "first", "kind": "python", "function": "noop_cols:first"},
                {"name": "second", "kind": "python", "function": "noop_cols:second", "depends_on": ["first"]},
            ],
            "run": {"row_group_size": 1000, "row_groups_in_flight": 4, "max_parallel": args.parallel},
        }
        loaded = treadle.load(config, base_dir=HERE)
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = treadle.run(loaded, out=Path(tmp) / "run")
        engine_total = time.perf_counter() - t0
        engine_cpu = time.process_time() - cpu0
        assert result.status == "done", result.summary
        engine_sched = result.summary["wall_s"]

        rows = [{"id": i} for i in range(args.rows)]
        t0 = time.perf_counter()
        asyncio.run(baseline(rows, args.parallel))
        base = time.perf_counter() - t0

    table = Table(
        title=f"{cells:,} no-op async cells ({args.rows:,} rows x 2 columns), parallel {args.parallel}"
    )
    for header in ("runner", "wall s", "us per cell", "cells/s", "vs baseline"):
        table.add_column(header, justify="right")
    table.add_row(
        "asyncio.gather + Semaphore",
        f"{base:.2f}",
        f"{base / cells * 1e6:.1f}",
        f"{cells / base:,.0f}",
        "1.00x",
    )
    table.add_row(
        "treadle (scheduling)",
        f"{engine_sched:.2f}",
        f"{engine_sched / cells * 1e6:.1f}",
        f"{cells / engine_sched:,.0f}",
        f"{engine_sched / base:.2f}x",
    )
    table.add_row(
        "treadle (incl. parquet outputs)",
        f"{engine_total:.2f}",
        f"{engine_total / cells * 1e6:.1f}",
        f"{cells / engine_total:,.0f}",
        f"{engine_total / base:.2f}x",
    )
    Console(width=120).print(table)
    print(f"treadle process CPU: {engine_cpu / cells * 1e6:.1f} us per cell")


if __name__ == "__main__":
    main()
