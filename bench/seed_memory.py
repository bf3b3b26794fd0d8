"""Peak memory of reading the seed table alone, per file format (issue 17, part 4).

Writes a seed of N rows (id, name, city; bench/memory.py's `write_seed`) as parquet, CSV and JSON
lines, then reads each with `treadle.engine.seed.load_table` in a fresh process. Per format it prints:

- file MB: the seed file's size; frame MB: the DataFrame read, `memory_usage(deep=True)`.
- before MB: the process's resident set after its imports, before reading.
- peak MB: the largest resident set the process had (`VmHWM`) once the table is read.
- extra MB: peak - before - frame: what reading needed beyond the table it returns.

The reading code is the one the child process imports: run it with `PYTHONPATH=<a worktree>` to
measure that tree's reading code.

    python bench/seed_memory.py [--rows 100000 1000000] [--formats parquet csv jsonl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from memory import write_seed
from rich.console import Console
from rich.table import Table

MB = 2**20

# Run in the child: imports first (their memory is the baseline), then one read.
CHILD = """
import json, sys, time
from pathlib import Path
import pandas, pyarrow.parquet
from treadle.engine import seed

def status_kb(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(field + ":"))

before = status_kb("VmRSS")
started = time.perf_counter()
frame = seed.load_table(Path(sys.argv[1]))
seconds = time.perf_counter() - started
print(json.dumps({
    "rows": len(frame),
    "seconds": seconds,
    "before_kb": before,
    "peak_kb": status_kb("VmHWM"),
    "frame_bytes": int(frame.memory_usage(deep=True).sum()),
    "file_bytes": Path(sys.argv[1]).stat().st_size,
    "module": sys.modules[seed.load_table.__module__].__file__,
}))
"""


def measure(path: Path) -> dict:
    # Run in the seed's folder: `python -c` puts its working directory first on sys.path.
    command = [sys.executable, "-c", CHILD, str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=path.parent)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    formats = ("parquet", "csv", "jsonl")
    parser.add_argument("--formats", nargs="+", choices=formats, default=list(formats))
    args = parser.parse_args()

    table = Table(title="load_table on a seed of id, name, city; one fresh process per file")
    for header in ("format", "rows", "file MB", "frame MB", "read s", "before MB", "peak MB", "extra MB"):
        table.add_column(header, justify="right")
    module = ""
    with tempfile.TemporaryDirectory(prefix="treadle-seed-memory-") as tmp:
        for suffix in args.formats:
            for rows in args.rows:
                path = Path(tmp) / f"seed-{rows}.{suffix}"
                write_seed(path, rows)
                result = measure(path)
                path.unlink()
                module = result["module"]
                frame_mb = result["frame_bytes"] / MB
                before_mb, peak_mb = result["before_kb"] / 1024, result["peak_kb"] / 1024
                table.add_row(
                    suffix,
                    f"{rows:,}",
                    f"{result['file_bytes'] / MB:,.1f}",
                    f"{frame_mb:,.1f}",
                    f"{result['seconds']:.2f}",
                    f"{before_mb:,.0f}",
                    f"{peak_mb:,.0f}",
                    f"{peak_mb - before_mb - frame_mb:,.0f}",
                )
    Console(width=120).print(table)
    print(f"read by {module}")


if __name__ == "__main__":
    main()
