"""TUI refresh cost: the app, headless (`run_test`, 160x48), over a 100,000-row run of fast cells.

Two async python columns that sleep a little (`--sleep-ms`) keep thousands of cells changing state
every second while the app ticks. Measured in the UI thread: the tick handler (snapshot of the rows in
view, header, grid, limits, failures, log, timeline), each screen update (compositor + render_line of
the dirty widgets), their sum per tick, and the UI thread's CPU time over the run.

    python bench/tui.py [--rows 100000] [--parallel 64] [--sleep-ms 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from textual.screen import Screen

import treadle
from treadle.engine.controller import RunController
from treadle.engine.run import RunOptions
from treadle.tui.app import TreadleApp

COLUMNS = textwrap.dedent(
    """
    import asyncio
    DELAY = {delay}

    async def first(row):
        await asyncio.sleep(DELAY)
        return 1

    async def second(row):
        await asyncio.sleep(DELAY)
        return row["first"] + 1
    """
)
CHANGES_PER_CELL = 3
"""waiting or blocked-free -> ready -> running -> done: three state changes per cell (at least)."""


class Timed(TreadleApp):
    """The app with its tick timed; screen updates are timed by a Screen patch below."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ticks: list[float] = []
        self.per_tick: list[float] = []  # tick + the screen updates that follow it
        self.per_tick_cpu: list[float] = []  # the same, in UI-thread CPU time

    def _tick(self) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        super()._tick()
        elapsed = time.perf_counter() - started
        self.ticks.append(elapsed)
        self.per_tick.append(elapsed)
        self.per_tick_cpu.append(time.thread_time() - cpu)


RENDERS: list[float] = []


def _timed_update(original):
    def update(self: Screen) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        original(self)
        elapsed = time.perf_counter() - started
        RENDERS.append(elapsed)
        app = self.app
        if isinstance(app, Timed) and app.per_tick:
            app.per_tick[-1] += elapsed
            app.per_tick_cpu[-1] += time.thread_time() - cpu

    return update


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def drive(controller: RunController, seconds: float) -> dict:
    app = Timed(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        done0 = controller.snapshot().cells["done"]
        await asyncio.sleep(0.5)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and app.status not in ("idle", "done"):
            await asyncio.sleep(0.25)
        await pilot.pause()
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        done = controller.snapshot().cells["done"] - done0
        controller.abort()
    controller.wait(60)
    return {
        "wall": wall,
        "ui_cpu": cpu,
        "cells_per_s": done / wall,
        "ticks": app.ticks,
        "per_tick": app.per_tick,
        "per_tick_cpu": app.per_tick_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--parallel", type=int, default=64)
    parser.add_argument("--sleep-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    Screen._on_timer_update = _timed_update(Screen._on_timer_update)  # type: ignore[method-assign]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tui_bench_cols.py").write_text(COLUMNS.format(delay=args.sleep_ms / 1000))
        seed = folder / "seed.parquet"
        pd.DataFrame({"id": range(args.rows)}).to_parquet(seed)
        config = {
            "seed": {"path": str(seed)},
            "columns": [
                {"name": "first", "kind": "python", "function": "tui_bench_cols:first"},
                {"name": "second", "kind": "python", "function": "tui_bench_cols:second"},
            ],
            "run": {
                "name": "tui-bench",
                "row_group_size": 1000,
                "row_groups_in_flight": 4,
                "max_parallel": args.parallel,
            },
        }
        loaded = treadle.load(config, base_dir=folder)
        controller = RunController(loaded, RunOptions(out=folder / "run", hold_open=True)).start()
        stats = asyncio.run(drive(controller, args.seconds))

    ms = 1000.0
    changes = stats["cells_per_s"] * CHANGES_PER_CELL
    table = Table(
        title=f"TUI refresh: {args.rows:,} rows x 2 columns, {stats['cells_per_s']:,.0f} cells/s "
        f"(~{changes:,.0f} cell state changes/s), {len(stats['ticks'])} ticks in {stats['wall']:.1f} s"
    )
    for header in ("measure", "p50 ms", "p99 ms", "max ms", "mean ms"):
        table.add_column(header, justify="right")
    for label, values in (
        ("tick handler", stats["ticks"]),
        ("screen update (render)", RENDERS),
        ("tick + its renders", stats["per_tick"]),
        ("tick + its renders, UI CPU time", stats["per_tick_cpu"]),
    ):
        table.add_row(
            label,
            f"{pct(values, 0.5) * ms:.2f}",
            f"{pct(values, 0.99) * ms:.2f}",
            f"{max(values, default=0) * ms:.2f}",
            f"{(statistics.fmean(values) if values else 0) * ms:.2f}",
        )
    console = Console()
    console.print(table)
    share = stats["ui_cpu"] / stats["wall"]
    console.print(f"UI thread CPU: {stats['ui_cpu']:.2f} s over {stats['wall']:.1f} s wall = {share:.1%} of one core")
    target = pct(stats["per_tick"], 0.99) * ms < 50
    console.print(f"target p99 (tick + renders) < 50 ms: {'met' if target else 'NOT met'}")
    if changes < 5000:
        console.print("[yellow]fewer than 5,000 cell changes/s: raise --parallel or lower --sleep-ms[/]")
    sys.exit(0 if target else 1)


if __name__ == "__main__":
    main()
