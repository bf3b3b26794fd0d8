"""What tracing costs the engine per cell, counted rather than timed: instructions and simulated cache
misses under valgrind's cachegrind, tracing off and on (needs valgrind: `apt install valgrind`).

bench/scheduler.py times the same pipeline, but on a shared 2-core machine identical runs differ by
20% and more; counts repeat to a fraction of a percent. Each number is per cell, from the difference
between runs of `--rows` and twice as many rows, so starting the process (imports, the trace helper)
cancels out; what the end of a run does per cell (outputs, summary metrics) stays in. "est. cycles" is
KCachegrind's estimate: instructions + 10 x first-level misses + 100 x last-level misses.

Under cachegrind the engine runs ~50x slower, so its timers (work slices, a trace batch every quarter
second, the loop-lag probe, the timeout watchdog) are stretched by `--stretch`: per cell it then does
what it does natively (a trace batch of ~40,000 records, not ~800). The trace helper process runs
natively and is not counted: it formats trace.jsonl on the other core.

    python bench/tracing_cost.py [--rows 20000] [--stretch 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent
EVENTS = {"Ir": "instructions", "D1": "L1 misses", "LL": "last-level misses"}


def stretch_timers(factor: float) -> None:
    from treadle.engine import deadlines, loop_health, run, scheduler

    run.TRACE_FLUSH_EVERY_S *= factor
    run.PROGRESS_EVERY_S *= factor
    scheduler._SLICE_S *= factor
    loop_health.INTERVAL_S *= factor
    set_up = deadlines.Deadlines.__init__

    def stretched(self, *args, **kwargs) -> None:
        set_up(self, *args, **kwargs)
        self.tick_s *= factor

    deadlines.Deadlines.__init__ = stretched


def run_once(rows: int, trace: bool, out: Path, stretch: float) -> None:
    """The child: one run of the benches' pipeline (under cachegrind)."""
    import pandas as pd

    sys.path.insert(0, str(HERE))
    import noop_cols

    import treadle

    stretch_timers(stretch)
    seed = out / "seed.parquet"
    pd.DataFrame({"id": range(rows)}).to_parquet(seed)
    result = treadle.run(treadle.load(noop_cols.pipeline(str(seed), 64, trace), base_dir=HERE), out=out / "run")
    assert result.status == "done", result.summary


def counted(rows: int, trace: bool, stretch: float, tmp: Path) -> dict[str, int]:
    """Cachegrind's totals for one child run: instructions, L1 and last-level misses."""
    name = f"{rows}-{'on' if trace else 'off'}"
    out = tmp / name
    out.mkdir()
    counts = tmp / f"{name}.cachegrind"
    child = [sys.executable, __file__, "--child", str(rows), "on" if trace else "off", str(out), str(stretch)]
    subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--cachegrind-out-file={counts}", *child],
        check=True,
        capture_output=True,
    )
    lines = counts.read_text().splitlines()
    names = next(line for line in lines if line.startswith("events:")).split()[1:]
    numbers = next(line for line in lines if line.startswith("summary:")).split()[1:]
    values = dict(zip(names, map(int, numbers), strict=True))
    return {
        "Ir": values["Ir"],
        "D1": values["D1mr"] + values["D1mw"] + values["I1mr"],
        "LL": values["DLmr"] + values["DLmw"] + values["ILmr"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--stretch", type=float, default=50.0)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rows, trace, out, stretch = args.child
        run_once(int(rows), trace == "on", Path(out), float(stretch))
        return

    runs = [(rows, trace) for trace in (False, True) for rows in (args.rows, 2 * args.rows)]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:  # one child per core
        totals = dict(zip(runs, pool.map(lambda run: counted(*run, args.stretch, Path(tmp)), runs), strict=True))
    cells = 2 * args.rows  # the extra rows' cells: 2 columns each
    per_cell = {
        trace: {e: (totals[2 * args.rows, trace][e] - totals[args.rows, trace][e]) / cells for e in EVENTS}
        for trace in (False, True)
    }
    for counts in per_cell.values():
        counts["cycles"] = counts["Ir"] + 10 * counts["D1"] + 100 * counts["LL"]

    table = Table(title=f"Per no-op cell under cachegrind ({args.rows:,} vs {2 * args.rows:,} rows x 2 columns)")
    for header in ("count", "tracing off", "tracing on", "cost of tracing"):
        table.add_column(header, justify="right")
    for event, label in (*EVENTS.items(), ("cycles", "est. cycles")):
        off, on = per_cell[False][event], per_cell[True][event]
        table.add_row(label, f"{off:,.1f}", f"{on:,.1f}", f"{on / off - 1:+.1%}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
