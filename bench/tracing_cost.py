"""What tracing costs the engine per cell, counted rather than timed: instructions and simulated cache
misses under valgrind (callgrind with its cache simulator), tracing off and on (needs valgrind:
`apt install valgrind`).

bench/scheduler.py times the same pipeline, but on a shared 2-core machine identical runs differ by
20% and more. Counts move far less: by about 1% between identical runs (the engine's timers and
threads still see the clock), which moves the cost of tracing below by about 2 points.

Each number is per cell, from the difference between runs of `--rows` and twice as many rows, so
starting the process (imports) cancels out. As in bench/scheduler.py, "scheduling" is the run up to
its last cell and "with outputs" adds writing the run directory (output.parquet, summary.json with
its metrics, trace.parquet): callgrind dumps its counts at that point
(`--dump-before` a call the child makes there). "est. cycles" is KCachegrind's estimate:
instructions + 10 x first-level misses + 100 x last-level misses.

Under valgrind the engine runs ~50x slower, so its timers (work slices, a trace batch every quarter
second, the loop-lag probe, the timeout watchdog) are stretched by `--stretch`: per cell it then does
what it does natively (a trace batch of ~40,000 records, not ~800). The trace thread, which makes
each batch into an Arrow table and appends it to the run's trace stream, is counted with the rest.

    python bench/tracing_cost.py [--rows 20000] [--stretch 50]"""

from __future__ import annotations

import argparse
import os
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
    """The child: one run of the benches' pipeline (under callgrind)."""
    import pandas as pd

    sys.path.insert(0, str(HERE))
    import noop_cols

    import treadle
    from treadle.engine.run import Run

    stretch_timers(stretch)
    write_outputs = Run._write_outputs

    def marked(self: Run) -> None:
        os.getppid()  # callgrind dumps the counts so far here: the end of "scheduling"
        write_outputs(self)

    Run._write_outputs = marked
    seed = out / "seed.parquet"
    pd.DataFrame({"id": range(rows)}).to_parquet(seed)
    result = treadle.run(treadle.load(noop_cols.pipeline(str(seed), 64, trace), base_dir=HERE), out=out / "run")
    assert result.status == "done", result.summary


def _totals(path: Path) -> dict[str, int]:
    lines = path.read_text().splitlines()
    names = next(line for line in lines if line.startswith("events:")).split()[1:]
    numbers = next(line for line in lines if line.startswith("totals:")).split()[1:]
    values = dict(zip(names, map(int, numbers), strict=True))
    return {
        "Ir": values["Ir"],
        "D1": values["I1mr"] + values["D1mr"] + values["D1mw"],
        "LL": values["ILmr"] + values["DLmr"] + values["DLmw"],
    }


def counted(rows: int, trace: bool, stretch: float, tmp: Path) -> dict[str, dict[str, int]]:
    """Callgrind's totals for one child run, up to its last cell ("scheduling") and in all."""
    name = f"{rows}-{'on' if trace else 'off'}"
    out = tmp / name
    out.mkdir()
    counts = tmp / f"{name}.callgrind"
    child = [sys.executable, __file__, "--child", str(rows), "on" if trace else "off", str(out), str(stretch)]
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--cache-sim=yes",
            "--dump-before=os_getppid",
            f"--callgrind-out-file={counts}",
            *child,
        ],
        check=True,
        capture_output=True,
    )
    parts = sorted(tmp.glob(f"{name}.callgrind*"))
    assert len(parts) == 2, f"expected the counts in two parts, got {[p.name for p in parts]}"
    scheduling, rest = _totals(Path(f"{counts}.1")), _totals(counts)
    return {"scheduling": scheduling, "with outputs": {e: scheduling[e] + rest[e] for e in EVENTS}}


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

    def per_cell(phase: str, trace: bool) -> dict[str, float]:
        more, fewer = totals[2 * args.rows, trace][phase], totals[args.rows, trace][phase]
        counts = {e: (more[e] - fewer[e]) / cells for e in EVENTS}
        counts["cycles"] = counts["Ir"] + 10 * counts["D1"] + 100 * counts["LL"]
        return counts

    title = f"Per no-op cell, counted under valgrind ({args.rows:,} vs {2 * args.rows:,} rows x 2 columns)"
    table = Table(title=title)
    for header in ("phase", "count", "tracing off", "tracing on", "cost of tracing"):
        table.add_column(header, justify="right")
    for phase in ("scheduling", "with outputs"):
        off, on = per_cell(phase, False), per_cell(phase, True)
        for event, label in (*EVENTS.items(), ("cycles", "est. cycles")):
            table.add_row(phase, label, f"{off[event]:,.1f}", f"{on[event]:,.1f}", f"{on[event] / off[event] - 1:+.1%}")
        table.add_section()
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
