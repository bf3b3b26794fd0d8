"""One process, `--workers 2` and Ray local with 2 workers on the same LLM workload (issue 20).

Workload: ROWS rows x 2 dependent LLM columns (the second prompt quotes the first answer), so
2 x ROWS chat completions, against the simulator in its own process answering after LATENCY ms,
max_parallel 1024 (run and model), row groups of 100 with enough in flight (12) that the row-group
limit is not what bounds the calls in flight. The response cache is off. The configurations take
turns, REPEAT rounds; the first table shows each one's best run by wall time, the second the CPU per
call of every process involved (median over the rounds: CPU per call moves far less with the machine's
load than the wall does).

Configurations: `1` one engine process; `2` (any number) `--workers N`, worker processes on this
machine, forked from the fork server (workers/forkserver.py), which a warm-up run has started, as the
one process's imports are done in its warm-up run; `ray` Ray actors (`run.executor: ray`, 2 workers) on a
local Ray that the bench starts once beforehand, as a cluster would be running already (its start-up is
not in any run's wall, each actor's own is).

Columns: wall (summary.json `wall_s`: from the run's start, worker start-up included), calls wall
(first request to last answer at the simulator: the cells alone), when the first call started and how
long the run went on after the last one ended (trace.parquet: start-up and the end), calls/s over the
wall, the endpoint
bound (calls x latency / 1024), max requests in flight at the simulator, engine CPU (summary.json
`engine_cpu_s`: the engine loops' threads, the parent's and every worker's), client CPU (this process
and every process under it: worker processes, Ray's actors and daemons), simulator CPU (its process).
CPU per call: the parent (this process: the run, its merging of the workers' messages and writing),
each worker (or Ray actor), Ray's own daemons, the simulator; and the CPU-bound ceilings they imply
on this machine's cores.

`--pin` puts the simulator on CPU 0 and the client (and its workers) on CPU 1: the workers then share
one core, so their speed-up is gone, but what is left shows the cost of splitting the run (the same
work on one core) and whether the simulator alone on its core keeps up.

    .venv/bin/python bench/scale.py [--rows 10000] [--latency-ms 200] [--configs 1,2,ray] [--repeat 2] [--pin]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import treadle  # noqa: E402
from treadle.sim import SimConfig, SimulatorProcess  # noqa: E402

PARALLEL = 1024
RAY_WORKERS = 2
SAMPLE_EVERY_S = 0.5  # how often the descendants' CPU is read (a process that ends keeps its last reading)
_TICK = os.sysconf("SC_CLK_TCK")


def _pipeline(workdir: Path, url: str, rows: int, config: str) -> Path:
    seed = workdir / "seed.csv"
    if not seed.exists():
        pd.DataFrame({"id": range(rows), "q": [f"question {i}" for i in range(rows)]}).to_csv(seed, index=False)
    run: dict[str, Any] = {"max_parallel": PARALLEL, "row_group_size": 100, "row_groups_in_flight": 12}
    if config == "ray":
        run |= {"executor": "ray", "workers": RAY_WORKERS}
    else:
        run["workers"] = int(config)
    pipeline = {
        "seed": {"path": "seed.csv"},
        "models": {"m": {"model": "bench-model", "base_url": url, "max_parallel": PARALLEL}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "Answer the question: {{ q }}"},
            {"name": "b", "kind": "llm", "model": "m", "prompt": "Check this answer: {{ a }}"},
        ],
        "run": run,
    }
    path = workdir / f"pipeline-{config}.yaml"
    path.write_text(json.dumps(pipeline))
    return path


def _cpu_s(pid: int) -> float | None:
    """A process's CPU seconds (user + system), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def _command(pid: int) -> str:
    """Its command line as `ps` shows it (Ray's processes set theirs: ray::EngineActor...)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    except OSError:
        pass
    return found


def _self_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


@dataclass
class DescendantsCpu:
    """CPU seconds each process under this one used while `with`: read every SAMPLE_EVERY_S on a
    thread whose own CPU is kept apart (it runs in the parent, whose CPU it would otherwise inflate)."""

    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    commands: dict[int, str] = field(default_factory=dict)
    parents: dict[int, int] = field(default_factory=dict)
    own_cpu_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> DescendantsCpu:
        self._read(first=True)
        self._thread = threading.Thread(target=self._watch, name="bench-cpu-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._read(first=False)

    def used(self) -> dict[int, float]:
        return {pid: self.last[pid] - self.first.get(pid, 0.0) for pid in self.last}

    def _watch(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            started = time.thread_time()
            self._read(first=False)
            self.own_cpu_s += time.thread_time() - started

    def _read(self, first: bool) -> None:
        todo = [(os.getpid(), child) for child in _children(os.getpid())]
        while todo:
            parent, pid = todo.pop()
            self.parents[pid] = parent
            cpu = _cpu_s(pid)
            if cpu is None:
                continue
            self.commands[pid] = _command(pid) or self.commands.get(pid, "")  # a Ray worker renames itself
            self.last[pid] = cpu
            if first:
                self.first[pid] = cpu
            todo += [(pid, child) for child in _children(pid)]


@dataclass(frozen=True)
class Measured:
    config: str
    wall: float
    calls_wall: float
    first_call: float
    """From the run's start to its first call (the trace's first t_start): the workers' start-up."""
    last_call: float
    """From the run's start to the end of its last call."""
    calls: int
    max_in_flight: int
    engine_cpu: float
    parent_cpu: float
    workers_cpu: list[float]
    """Each worker process (or Ray actor), largest first; empty for one process."""
    others_cpu: float
    """The other processes under this one: Ray's daemons."""
    sim_cpu: float

    @property
    def client_cpu(self) -> float:
        return self.parent_cpu + sum(self.workers_cpu) + self.others_cpu

    def per_call_us(self, cpu_s: float) -> float:
        return cpu_s / self.calls * 1e6


def _get(url: str) -> Any:
    with urllib.request.urlopen(url) as answer:
        return json.loads(answer.read())


def run_once(pipeline: Path, out: Path, config: str, sim_url: str, sim_pid: int) -> Measured:
    root = sim_url.removesuffix("/v1")
    urllib.request.urlopen(urllib.request.Request(root + "/stats/reset", method="POST")).close()
    since = _get(root + "/requests?since=1000000000")["next"]
    sim_cpu = _sim_cpu_s(sim_pid)
    with DescendantsCpu() as descendants:
        parent_cpu = _self_cpu_s()
        result = treadle.run(pipeline, out=out, cache="off")
        parent_cpu = _self_cpu_s() - parent_cpu - descendants.own_cpu_s
    sim_cpu = _sim_cpu_s(sim_pid) - sim_cpu
    assert result.status == "done", result.message
    stats = _get(root + "/stats")
    requests = _get(f"{root}/requests?since={since}")["requests"]
    trace = pq.read_table(result.run_dir / "trace.parquet", columns=["t_start", "t_end"])
    used = {pid: cpu for pid, cpu in descendants.used().items() if pid != sim_pid}
    workers = [pid for pid in used if _is_worker(pid, descendants)]
    return Measured(
        config=config,
        wall=result.summary["wall_s"],
        calls_wall=max(r["t_end"] for r in requests) - min(r["t"] for r in requests),
        first_call=pc.min(trace["t_start"]).as_py(),
        last_call=pc.max(trace["t_end"]).as_py(),
        calls=stats["requests_total"],
        max_in_flight=stats["max_in_flight"],
        engine_cpu=result.summary["engine_cpu_s"],
        parent_cpu=parent_cpu,
        workers_cpu=sorted((used[pid] for pid in workers), reverse=True),
        others_cpu=sum(cpu for pid, cpu in used.items() if pid not in workers),
        sim_cpu=sim_cpu,
    )


def _is_worker(pid: int, descendants: DescendantsCpu) -> bool:
    """A worker process is forked from the fork server (and shows its command line); a Ray actor names itself."""
    parent = descendants.commands.get(descendants.parents[pid], "")
    return "treadle.engine.workers.forkserver" in parent or "EngineActor" in descendants.commands[pid]


def _sim_cpu_s(pid: int) -> float:
    cpu = _cpu_s(pid)
    assert cpu is not None, "the simulator process has gone"
    return cpu


def _start_ray() -> None:
    """A local Ray as the engine's would start it (ray_pool.RayActors), once for every run."""
    try:
        from treadle.engine.workers.ray_pool import start_local_ray
    except ImportError:
        sys.exit("--configs ray needs Ray: pip install 'treadle[ray]'")
    start_local_ray(RAY_WORKERS)


def _pin(sim_pid: int) -> None:
    os.sched_setaffinity(sim_pid, {0})
    os.sched_setaffinity(0, {1})  # worker processes and Ray's inherit it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--configs", default="1,2,ray", help="comma-separated: worker counts, and ray")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--pin", action="store_true", help="simulator on CPU 0, client and workers on CPU 1")
    args = parser.parse_args()
    configs = args.configs.split(",")
    runs: dict[str, list[Measured]] = {config: [] for config in configs}
    sim = SimulatorProcess(SimConfig(latency_ms=args.latency_ms))
    with sim as url, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sim_pid = sim.pid
        assert sim_pid is not None
        if args.pin:
            _pin(sim_pid)
        if "ray" in configs:
            _start_ray()
        # What a fresh `treadle run` pays before its run starts (imports, first use) is not in any run's
        # CPU: one process pays it in its first run only, and so does the fork server the worker
        # processes are forked from (its start-up is printed apart). A Ray actor pays its own in every run.
        warm_up = workdir / "warm-up"
        warm_up.mkdir()
        for config in ["1", *(c for c in configs if c.isdigit() and int(c) > 1)]:
            treadle.run(_pipeline(warm_up, url, 100, config), out=warm_up / f"run-{config}", cache="off")
        for round_ in range(args.repeat):
            for config in configs if round_ % 2 == 0 else configs[::-1]:
                pipeline = _pipeline(workdir, url, args.rows, config)
                measured = run_once(pipeline, workdir / f"run-{config}-{round_}", config, url, sim_pid)
                runs[config].append(measured)
                _print_run(round_, measured)
    console = Console(width=170)
    console.print(_best_table(runs, args.rows, args.latency_ms))
    console.print(_cpu_table(runs))
    calls = 2 * args.rows
    console.print(
        f"endpoint bound {calls * args.latency_ms / 1000 / PARALLEL:.2f} s ({calls:,} calls x "
        f"{args.latency_ms:.0f} ms / {PARALLEL}); cores {os.cpu_count()}{'; pinned' if args.pin else ''}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    _print_ratios(runs)
    start_up = _engine_start_up_cpu_s()
    console.print(
        f"the fork server's start-up, once per process (interpreter and imports, measured apart): {start_up:.2f}"
        f" CPU s, {start_up / calls * 1e6:.0f} us per call of this run; a Ray actor's, in each actor"
    )


def _print_ratios(runs: dict[str, list[Measured]]) -> None:
    """Each configuration against the first: calls/s over the wall (best and median run) and the calls wall."""
    first, *others = runs.values()
    for measured in others:

        def ratio(of: Any, pick: Any, measured: list[Measured] = measured) -> float:
            return pick(of(m) for m in measured) / pick(of(m) for m in first)

        rate = ratio(lambda m: m.calls / m.wall, max), ratio(lambda m: m.calls / m.wall, statistics.median)
        calls_wall = 1 / ratio(lambda m: m.calls_wall, min)
        print(
            f"{_label(measured[0].config)} / {_label(first[0].config)}: calls/s {rate[0]:.2f}x best, "
            f"{rate[1]:.2f}x median; calls wall (start-up and end left out) {calls_wall:.2f}x best"
        )


def _engine_start_up_cpu_s() -> float:
    """The CPU a new engine process spends before its first cell: Python, treadle's engine and the
    model client's imports (langchain_openai), as the fork server and a Ray actor do."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = "import treadle.engine.workers.worker, langchain_openai"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def _print_run(round_: int, m: Measured) -> None:
    workers = "+".join(f"{cpu:.2f}" for cpu in m.workers_cpu) or "-"
    print(
        f"round {round_ + 1}, {_label(m.config)}: wall {m.wall:.2f} s, calls wall {m.calls_wall:.2f} s, first call at "
        f"{m.first_call:.2f} s, after the last {m.wall - m.last_call:.2f} s, "
        f"{m.calls / m.wall:,.0f} calls/s, max in flight {m.max_in_flight}, engine CPU {m.engine_cpu:.2f} s, "
        f"client CPU {m.client_cpu:.2f} s (parent {m.parent_cpu:.2f}, workers {workers}, others "
        f"{m.others_cpu:.2f}), sim CPU {m.sim_cpu:.2f} s",
        flush=True,
    )


def _label(config: str) -> str:
    if config == "ray":
        return f"ray {RAY_WORKERS} workers"
    return "1 process" if config == "1" else f"{config} workers"


def _best_table(runs: dict[str, list[Measured]], rows: int, latency_ms: float) -> Table:
    bound = 2 * rows * latency_ms / 1000 / PARALLEL
    title = f"{rows:,} rows x 2 dependent llm columns, {latency_ms:.0f} ms, max_parallel {PARALLEL}: best run of each"
    table = Table(title=title)
    for name in ("config", "wall s", "calls wall s", "first call at s", "after last s", "calls/s", "vs first",
                 "wall / bound", "max in flight", "engine CPU s", "client CPU s", "sim CPU s"):  # fmt: skip
        table.add_column(name, justify="right")
    best = {config: min(measured, key=lambda m: m.wall) for config, measured in runs.items()}
    base = next(iter(best.values()))
    for config, m in best.items():
        table.add_row(
            _label(config),
            f"{m.wall:.2f}",
            f"{m.calls_wall:.2f}",
            f"{m.first_call:.2f}",
            f"{m.wall - m.last_call:.2f}",
            f"{m.calls / m.wall:,.0f}",
            f"{(m.calls / m.wall) / (base.calls / base.wall):.2f}x",
            f"{m.wall / bound:.2f}",
            str(m.max_in_flight),
            f"{m.engine_cpu:.2f}",
            f"{m.client_cpu:.2f}",
            f"{m.sim_cpu:.2f}",
        )
    return table


def _cpu_table(runs: dict[str, list[Measured]]) -> Table:
    """CPU per call (us), median over the runs, and the calls/s that CPU allows: the client's busiest
    process alone on a core (a loop is one core), and everything (client and simulator) on all cores."""
    cores = os.cpu_count() or 1
    table = Table(title=f"CPU per call, us (median of each configuration's runs); ceilings on {cores} cores")
    for name in ("config", "runs", "client", "parent", "each worker", "other processes", "engine loops", "simulator",
                 "client + sim", "ceiling: busiest process", f"ceiling: {cores} cores"):  # fmt: skip
        table.add_column(name, justify="right")
    for config, measured in runs.items():

        def median(cpu_of: Any, measured: list[Measured] = measured) -> float:
            return statistics.median(m.per_call_us(cpu_of(m)) for m in measured)

        client, sim = median(lambda m: m.client_cpu), median(lambda m: m.sim_cpu)
        parent = median(lambda m: m.parent_cpu)
        n_workers = len(measured[0].workers_cpu)
        workers = [median(lambda m, i=i: m.workers_cpu[i]) for i in range(n_workers)]
        busiest = max([parent, *workers])
        table.add_row(
            _label(config),
            str(len(measured)),
            f"{client:.0f}",
            f"{parent:.0f}",
            " / ".join(f"{w:.0f}" for w in workers) or "-",
            f"{median(lambda m: m.others_cpu):.0f}",
            f"{median(lambda m: m.engine_cpu):.0f}",
            f"{sim:.0f}",
            f"{client + sim:.0f}",
            f"{1e6 / busiest:,.0f}/s",
            f"{cores * 1e6 / (client + sim):,.0f}/s",
        )
    return table


if __name__ == "__main__":
    main()
