"""How many chat completions a second the simulator serves, and its CPU per request.

The simulator runs in its own process (`python -m treadle.sim`) so it has a core to itself; this
process drives it with a raw aiohttp client at each concurrency for a few seconds and prints
requests/s, latency percentiles and the CPU per call of the client and of the server (the one near
1,000 / req_per_s ms is the core that limits).

    .venv/bin/python bench/sim_throughput.py [--seconds 4] [--concurrency 16,64,256]

The simulator's CPU per request at the rate of bench/scale.py's calls (~2,300/s: 512 in flight,
200 ms latency), with the simulator on CPU 0 and this client on CPU 1 so they do not take each
other's core, median of 5:

    .venv/bin/python bench/sim_throughput.py --latency-ms 200 --concurrency 512 --pin --repeat 5

On a shared machine that figure moves by +-10% from run to run. `--callgrind` runs the simulator
under valgrind's callgrind instead (`apt-get install valgrind`) and prints the instructions it
executes per request (server_kinstr, thousands), which move by well under 1%: the measure to
compare two versions of the simulator with (its requests/s and latencies are then valgrind's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from treadle.sim import SimConfig, SimulatorProcess
from treadle.sim.cli import URL_LINE_PREFIX, config_to_argv

BODY = {"model": "bench", "messages": [{"role": "user", "content": "How fast can you answer this question?"}]}
COLUMNS = [
    ("concurrency", "{:>11.0f}"),
    ("requests", "{:>9.0f}"),
    ("errors", "{:>6.0f}"),
    ("req_per_s", "{:>9.0f}"),
    ("p50_ms", "{:>7.2f}"),
    ("p99_ms", "{:>7.2f}"),
    ("client_cpu_ms", "{:>13.3f}"),
]


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by another process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class CpuMeter:
    """The simulator's CPU in a measured window, in ms (summed per request: server_cpu_ms)."""

    column = ("server_cpu_ms", "{:>13.3f}")

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._started = math.nan

    def start(self) -> None:
        self._started = process_cpu_s(self.pid)

    def stop(self) -> float:
        return (process_cpu_s(self.pid) - self._started) * 1000


class CallgrindMeter:
    """The instructions the simulator executes in a measured window, in thousands (server_kinstr):
    callgrind counts only while told to, and writes each window's count to a file of its own."""

    column = ("server_kinstr", "{:>13.1f}")

    def __init__(self, pid: int, out_dir: Path) -> None:
        self.pid = pid
        self.out_dir = out_dir
        self._dumps = 0

    def start(self) -> None:
        self._control("--instr=on")

    def stop(self) -> float:
        self._control("--instr=off")
        self._control("--dump")
        self._dumps += 1
        dump = self.out_dir / f"callgrind.out.{self._dumps}"
        totals = next(line for line in dump.read_text().splitlines() if line.startswith("totals:"))
        return int(totals.split()[1]) / 1000

    def _control(self, option: str) -> None:
        subprocess.run(["callgrind_control", option, str(self.pid)], check=True, capture_output=True)


async def drive(base_url: str, concurrency: int, seconds: float, meter: CpuMeter | CallgrindMeter) -> dict[str, float]:
    url = f"{base_url}/chat/completions"
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(deadline: float) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(url, json=BODY) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - start)

        # Warm up (connections, caches), then measure a clean window.
        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(concurrency)))
        latencies.clear()
        meter.start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(wall0 + seconds) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        server = meter.stop()

    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / wall,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "client_cpu_ms": cpu * 1000 / len(latencies),
        meter.column[0]: server / len(latencies),
    }


def print_table(rows: list[dict[str, float]], columns: list[tuple[str, str]]) -> None:
    print("  ".join(f"{name:>{len(fmt.format(0))}}" for name, fmt in columns))
    for row in rows:
        print("  ".join(fmt.format(row[name]) for name, fmt in columns))


def pin(server_pid: int | None) -> None:
    """The simulator on CPU 0, this client on CPU 1 (Linux only)."""
    if server_pid is None or not hasattr(os, "sched_setaffinity"):
        raise SystemExit("--pin needs Linux's sched_setaffinity")
    os.sched_setaffinity(server_pid, {0})
    os.sched_setaffinity(0, {1})


@contextlib.contextmanager
def simulator(config: SimConfig, callgrind: bool) -> Iterator[tuple[str, CpuMeter | CallgrindMeter]]:
    """The simulator's base URL and the meter of its cost: its own process, or that process under callgrind."""
    if not callgrind:
        process = SimulatorProcess(config)
        with process as url:
            yield url, CpuMeter(process.pid)
        return
    argv, env = config_to_argv(config)
    with tempfile.TemporaryDirectory() as out_dir:
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.out",
        ]
        command = [*valgrind, sys.executable, "-m", "treadle.sim", *argv, "--port", "0"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, **env}, text=True) as proc:
            assert proc.stdout is not None
            try:
                url = proc.stdout.readline().removeprefix(URL_LINE_PREFIX).strip()
                yield url, CallgrindMeter(proc.pid, Path(out_dir))
            finally:
                proc.terminate()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per concurrency")
    parser.add_argument("--concurrency", default="16,64,256", help="comma-separated levels")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the simulator's latency (default: 0)")
    parser.add_argument("--pin", action="store_true", help="simulator on CPU 0, this client on CPU 1")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every level; the summary takes the median")
    parser.add_argument("--callgrind", action="store_true", help="count the simulator's instructions (valgrind)")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    with simulator(SimConfig(latency_ms=args.latency_ms), args.callgrind) as (base_url, meter):
        if args.pin:
            pin(meter.pid)
        print(
            f"simulator (separate process{', pinned to CPU 0' if args.pin else ''}"
            f"{', under callgrind' if args.callgrind else ''}) at {base_url}, "
            f"latency {args.latency_ms:g} ms, {args.seconds:g} s per level, {args.repeat} run(s)"
        )
        rows = [await drive(base_url, level, args.seconds, meter) for _ in range(args.repeat) for level in levels]
    column, _ = meter.column
    print_table(rows, [*COLUMNS, meter.column])
    for level in levels:
        runs = [row for row in rows if row["concurrency"] == level]
        cost = statistics.median(row[column] for row in runs)
        rate = statistics.median(row["req_per_s"] for row in runs)
        print(f"concurrency {level}: simulator {column} {cost:.3f} per request, {rate:,.0f} requests/s (median)")
    if not args.callgrind:
        best = max(row["req_per_s"] for row in rows)
        print(f"best: {best:,.0f} requests/s ({'meets' if best >= 2000 else 'BELOW'} the 2,000/s target)")


if __name__ == "__main__":
    asyncio.run(main())
