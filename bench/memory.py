"""Peak memory and run directory size against the number of rows (issue 17, parts 3 and 4).

For each size it writes a seed of N rows (id, name, city), then runs the real CLI, `treadle run
--no-ui`, on bench/memory_pipeline/pipeline.yaml (3 cheap columns: two templates and one sync python
function; the run's defaults otherwise) in a fresh process, with the run directory in a temporary
folder. Per size it prints:

- wall s: the whole command, from process start to exit (imports, seed, cells, outputs);
  engine s: summary.json's `wall_s`, the cells alone.
- peak RSS MB: the kernel's `ru_maxrss` from `os.wait4`: the largest resident set the command or any
  process it waited for (the trace helper of a large run) ever had. One process's peak, not a sum.
- all processes MB: the largest sum of the resident sets of the command and its child processes,
  sampled every 0.1 s (misses peaks shorter than that).
- the run directory after the run, in MB: output.parquet, trace.* , journal.*, groups/, the rest.

    python bench/memory.py [--rows 100000 300000 1000000] [--seed-format parquet|csv|jsonl]

With `--metrics RUN_DIR` it times instead summary.json's metrics of a finished run directory (what a
run computes at its end, `summary_metrics` over its trace.parquet), `--repeat` times in this process,
and prints the resident set before and at its peak (`VmHWM`).

    python bench/memory.py --metrics RUN_DIR [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

PIPELINE = Path(__file__).parent / "memory_pipeline" / "pipeline.yaml"
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia", "Linus"]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromsø", "Adelaide", "Montréal", "Pune", "Accra", "Tbilisi"]
SAMPLE_EVERY_S = 0.1
MB = 2**20


def write_seed(path: Path, rows: int) -> None:
    """id, name ("Ada K."), city: deterministic, a few short strings per row like a small real table."""
    frame = pd.DataFrame(
        {
            "id": range(rows),
            "name": [f"{FIRST[i % len(FIRST)]} {chr(65 + i * 7 % 26)}." for i in range(rows)],
            "city": [CITIES[i * 3 % len(CITIES)] for i in range(rows)],
        }
    )
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:  # ended meanwhile
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for parent in found:  # grows while it is walked: children of children too
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children", encoding="ascii") as handle:
                    found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


class TreeSampler(threading.Thread):
    """The largest sum of resident sets of a process and its descendants, sampled until `stop`."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY_S):
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(pid) for pid in _descendants(self.pid)))


def directory_sizes(run_dir: Path) -> dict[str, int]:
    """Bytes per part of the run directory."""
    sizes = {"output.parquet": 0, "trace.*": 0, "journal.*": 0, "groups/": 0, "others": 0}
    for entry in run_dir.iterdir():
        if entry.is_dir():
            part = "groups/" if entry.name == "groups" else "others"
            sizes[part] += sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        elif entry.name == "output.parquet":
            sizes["output.parquet"] += entry.stat().st_size
        elif entry.name.startswith("trace."):
            sizes["trace.*"] += entry.stat().st_size
        elif entry.name.startswith("journal."):
            sizes["journal.*"] += entry.stat().st_size
        else:
            sizes["others"] += entry.stat().st_size
    return sizes


def measure(rows: int, seed_format: str, tmp: Path) -> dict:
    seed = tmp / f"seed-{rows}.{seed_format}"
    write_seed(seed, rows)
    run_dir = tmp / f"run-{rows}"
    command = [
        sys.executable,
        "-c",
        "import sys; from treadle.cli import main; sys.exit(main())",  # what the `treadle` script runs
        "run",
        str(PIPELINE),
        "--no-ui",
        "--out",
        str(run_dir),
    ]
    env = {**os.environ, "MEMORY_SEED": str(seed)}
    started = time.perf_counter()
    stderr_path = tmp / f"stderr-{rows}.txt"  # a file, not a pipe: nobody reads a pipe during wait4
    with open(stderr_path, "wb") as stderr:
        # In the temporary folder: `python -c` puts its working directory first on sys.path, so a run
        # from a checkout would import that checkout's treadle, not the tree PYTHONPATH names.
        process = subprocess.Popen(command, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=stderr)
    sampler = TreeSampler(process.pid)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    said = stderr_path.read_text(encoding="utf-8", errors="replace")
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    return {
        "rows": rows,
        "exit": process.returncode,
        "stderr": said.strip().splitlines()[-3:],
        "status": summary.get("status", "?"),
        "wall_s": wall,
        "engine_s": summary.get("wall_s", float("nan")),
        "peak_kb": usage.ru_maxrss,  # Linux: kilobytes
        "tree_kb": sampler.peak_kb,
        "sizes": directory_sizes(run_dir),
    }


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith(field + ":"))


def time_metrics(run_dir: Path, repeat: int) -> None:
    """summary.json's metrics of `run_dir`, computed `repeat` times: seconds each, and resident MB."""
    from treadle.engine.analysis.run_dir import load_summary
    from treadle.engine.analysis.summary import summary_metrics

    summary = load_summary(run_dir)
    before = _status_mb("VmRSS")
    for _ in range(repeat):
        started = time.perf_counter()
        summary_metrics(run_dir, summary, None)
        print(f"summary_metrics: {time.perf_counter() - started:.2f} s")
    print(f"resident before {before:.0f} MB, peak {_status_mb('VmHWM'):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--seed-format", choices=("parquet", "csv", "jsonl"), default="parquet")
    parser.add_argument("--metrics", type=Path, help="time summary.json's metrics of this run directory instead")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.metrics is not None:
        time_metrics(args.metrics, args.repeat)
        return

    results = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="treadle-memory-") as tmp:
            result = measure(rows, args.seed_format, Path(tmp))
        results.append(result)
        if result["exit"] != 0:
            print(f"{rows:,} rows: exit {result['exit']}: {' | '.join(result['stderr'])}", file=sys.stderr)

    title = f"treadle run --no-ui, 3 cheap columns (2 templates, 1 sync python), {args.seed_format} seed"
    table = Table(title=title)
    parts = list(results[0]["sizes"]) if results else []
    headers = ["rows", "status", "wall s", "engine s", "peak RSS MB", "all processes MB", *parts, "run dir MB"]
    for header in headers:
        table.add_column(header, justify="right")
    for result in results:
        sizes = result["sizes"]
        table.add_row(
            f"{result['rows']:,}",
            result["status"],
            f"{result['wall_s']:.1f}",
            f"{result['engine_s']:.1f}",
            f"{result['peak_kb'] / 1024:,.0f}",
            f"{result['tree_kb'] / 1024:,.0f}",
            *(f"{sizes[part] / MB:,.1f}" for part in parts),
            f"{sum(sizes.values()) / MB:,.1f}",
        )
    Console(width=160).print(table)
    if len(results) >= 2:
        first, last = results[0], results[-1]
        extra_rows = last["rows"] - first["rows"]
        if extra_rows > 0:
            per_row = (last["peak_kb"] - first["peak_kb"]) * 1024 / extra_rows
            growth = (last["peak_kb"] - first["peak_kb"]) / 1024
            print(
                f"peak RSS grows {growth:,.0f} MB from {first['rows']:,} to {last['rows']:,} rows: "
                f"{per_row:,.0f} bytes per extra row"
            )


if __name__ == "__main__":
    main()
