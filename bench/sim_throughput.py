"""How many chat completions a second the simulator serves, and its CPU per request.

The simulator runs in its own process (`python -m treadle.sim`) so it has a core to itself; this
process drives it with a raw aiohttp client at each concurrency for a few seconds and prints
requests/s, latency percentiles and the CPU per call of the client and of the server (the one near
1,000 / req_per_s ms is the core that limits).

    .venv/bin/python bench/sim_throughput.py [--seconds 4] [--concurrency 16,64,256]

The simulator's CPU per request under bench/scale.py's load (1,024 in flight, 200 ms latency), with
the simulator on CPU 0 and this client on CPU 1 so they do not take each other's core, median of 5:

    .venv/bin/python bench/sim_throughput.py --latency-ms 200 --concurrency 1024 --pin --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import time
from pathlib import Path

import aiohttp

from treadle.sim import SimConfig, SimulatorProcess

BODY = {"model": "bench", "messages": [{"role": "user", "content": "How fast can you answer this question?"}]}
COLUMNS = [
    ("concurrency", "{:>11.0f}"),
    ("requests", "{:>9.0f}"),
    ("errors", "{:>6.0f}"),
    ("req_per_s", "{:>9.0f}"),
    ("p50_ms", "{:>7.2f}"),
    ("p99_ms", "{:>7.2f}"),
    ("client_cpu_ms", "{:>13.3f}"),
    ("server_cpu_ms", "{:>13.3f}"),
]


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by another process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def drive(base_url: str, concurrency: int, seconds: float, server_pid: int | None) -> dict[str, float]:
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
        cpu0, server0, wall0 = time.process_time(), process_cpu_s(server_pid), time.perf_counter()
        await asyncio.gather(*(worker(wall0 + seconds) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        server_cpu = process_cpu_s(server_pid) - server0

    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / wall,
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "client_cpu_ms": cpu * 1000 / len(latencies),
        "server_cpu_ms": server_cpu * 1000 / len(latencies),
    }


def print_table(rows: list[dict[str, float]]) -> None:
    print("  ".join(f"{name:>{len(fmt.format(0))}}" for name, fmt in COLUMNS))
    for row in rows:
        print("  ".join(fmt.format(row[name]) for name, fmt in COLUMNS))


def pin(server_pid: int | None) -> None:
    """The simulator on CPU 0, this client on CPU 1 (Linux only)."""
    if server_pid is None or not hasattr(os, "sched_setaffinity"):
        raise SystemExit("--pin needs Linux's sched_setaffinity")
    os.sched_setaffinity(server_pid, {0})
    os.sched_setaffinity(0, {1})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per concurrency")
    parser.add_argument("--concurrency", default="16,64,256", help="comma-separated levels")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the simulator's latency (default: 0)")
    parser.add_argument("--pin", action="store_true", help="simulator on CPU 0, this client on CPU 1")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every level; the summary takes the median")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    server = SimulatorProcess(SimConfig(latency_ms=args.latency_ms))
    with server as base_url:
        if args.pin:
            pin(server.pid)
        print(
            f"simulator (separate process{', pinned to CPU 0' if args.pin else ''}) at {base_url}, "
            f"latency {args.latency_ms:g} ms, {args.seconds:g} s per level, {args.repeat} run(s)"
        )
        rows = [await drive(base_url, level, args.seconds, server.pid) for _ in range(args.repeat) for level in levels]
    print_table(rows)
    for level in levels:
        runs = [row for row in rows if row["concurrency"] == level]
        cpu_us = statistics.median(row["server_cpu_ms"] for row in runs) * 1000
        rate = statistics.median(row["req_per_s"] for row in runs)
        print(f"concurrency {level}: simulator CPU {cpu_us:.0f} us per request, {rate:,.0f} requests/s (median)")
    best = max(row["req_per_s"] for row in rows)
    print(f"best: {best:,.0f} requests/s ({'meets' if best >= 2000 else 'BELOW'} the 2,000/s target)")


if __name__ == "__main__":
    asyncio.run(main())
