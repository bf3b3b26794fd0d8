"""The response cache, cold then warm: ROWS rows x 2 dependent llm columns on the simulator.

The first run finds an empty cache (XDG_CACHE_HOME points at a temporary directory) and sends every
request; the second, identical, finds every answer cached and sends none. Printed per run: the engine's
wall time (summary.json wall_s), its loop thread's CPU (engine_cpu_s), the requests the simulator got
(its GET /requests log) and the cache's hits; for the warm run, engine wall and CPU per hit. A third
run, warm, of a tenth of the rows gives the loop CPU a hit beyond what any run costs once (building
the model's client, the first row group): the difference between the two warm runs over their hits.
Target (issue 19): warm <= 1.0 s of engine wall for 4,000 hits.

    .venv/bin/python bench/cache.py [--rows 2000] [--latency-ms 50] [--parallel 64]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import treadle  # noqa: E402
from treadle.engine.response_cache import RequestKeys, ResponseCache, default_cache_path  # noqa: E402
from treadle.sim import SimConfig, SimulatorProcess  # noqa: E402


def pipeline(workdir: Path, url: str, rows: int, parallel: int) -> dict:
    pd.DataFrame({"q": [f"question {i}" for i in range(rows)]}).to_csv(workdir / "seed.csv", index=False)
    return {
        "seed": {"path": "seed.csv"},
        "models": {"m": {"model": "bench-model", "base_url": url, "max_parallel": parallel}},
        "columns": [
            {"name": "answer", "kind": "llm", "model": "m", "prompt": "Answer {{ q }}"},
            {"name": "judge", "kind": "llm", "model": "m", "prompt": "Judge the answer {{ answer }} to {{ q }}"},
        ],
        "run": {"max_parallel": parallel, "trace": True},
    }


def requests_so_far(url: str) -> int:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/requests?since=0") as answer:
        return int(json.load(answer)["next"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, SimulatorProcess(SimConfig(latency_ms=args.latency_ms)) as url:
        workdir = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(workdir / "cache")
        config = pipeline(workdir, url, args.rows, args.parallel)
        print(f"{args.rows} rows x 2 llm columns, simulator latency {args.latency_ms} ms, max_parallel {args.parallel}")
        cpu: dict[str, tuple[float, int]] = {}
        for name, rows in (("cold", None), ("warm", None), ("warm, a tenth of the rows", args.rows // 10)):
            before = requests_so_far(url)
            out = workdir / name.replace(" ", "_").replace(",", "")
            result = treadle.run(config, base_dir=workdir, out=out, rows=rows)
            sent = requests_so_far(url) - before
            summary = json.loads((out / "summary.json").read_text())
            cache = summary["cache"]
            cpu[name] = (summary["engine_cpu_s"], cache["hits"])
            line = (
                f"{name}: {result.status}, engine wall {summary['wall_s']:.3f} s, loop CPU "
                f"{summary['engine_cpu_s']:.3f} s, requests {sent}, "
                f"cache hits {cache['hits']}, misses {cache['misses']}"
            )
            if cache["hits"]:
                per_hit = 1e6 / cache["hits"]
                wall, loop_cpu = summary["wall_s"] * per_hit, summary["engine_cpu_s"] * per_hit
                line += f" ({wall:.0f} us wall, {loop_cpu:.0f} us loop CPU a hit)"
            print(line)
        (full, hits), (tenth, tenth_hits) = cpu["warm"], cpu["warm, a tenth of the rows"]
        if hits > tenth_hits:  # the run's fixed cost (clients, first group) left out
            print(f"loop CPU a hit beyond the run's fixed cost: {1e6 * (full - tenth) / (hits - tenth_hits):.0f} us")
        same = pd.read_parquet(workdir / "cold" / "output.parquet").equals(
            pd.read_parquet(workdir / "warm" / "output.parquet")
        )
        print(f"output.parquet identical: {same}")
        print(lookup_cost())


def lookup_cost() -> str:
    """The lookup alone, as hits pay it on the engine loop: the key of a request, then one SELECT of 32
    keys (ReadyHeaps looks up ready cells 32 at a time) and the JSON of the answers."""
    cache = ResponseCache(default_cache_path())
    keys = [key for (key,) in sqlite3.connect(default_cache_path()).execute("SELECT key FROM responses")]
    request_keys = RequestKeys.of("http://127.0.0.1:8000/v1", {"model": "bench-model", "temperature": 0.7})
    started = time.perf_counter()
    for i in range(len(keys)):
        request_keys.chat(f"Answer question {i}", None)
    keyed = time.perf_counter()
    for start in range(0, len(keys), 32):
        cache.get_many(keys[start : start + 32])
    looked_up = time.perf_counter()
    cache.close()
    n = len(keys)
    return (
        f"lookup alone: key {1e6 * (keyed - started) / n:.1f} us + SELECT {1e6 * (looked_up - keyed) / n:.1f} us a hit"
    )


if __name__ == "__main__":
    main()
