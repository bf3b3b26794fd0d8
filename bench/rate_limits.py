"""Rate limits (issue 15): how close treadle gets to an endpoint's rate without hammering it with 429s.

Each case runs treadle in this process (`treadle.start`, then `wait`): one LLM column over a seed of N
rows (N calls) against a fresh simulator in its own process (`SimulatorProcess`: LATENCY ms, a token
bucket per limit holding LIMIT_WINDOW_S seconds of its rate, 429 with Retry-After + retry-after-ms, fixed
seed):

- workloads: `rpm1200`  1,000 calls under 1,200 requests/min   (bound 50 s)
             `rpm6000`  3,000 calls under 6,000 requests/min   (bound 30 s)
             `tpm`      1,500 calls of a fixed token cost under a tokens/min limit set for a 30 s bound
- headers:   `hdr-on` the simulator sends x-ratelimit-* headers on every answer; `hdr-off` it does not
             (429s still carry Retry-After and retry-after-ms)
- runners:   `fixed256` / `fixed8`  max_parallel 256 / 8, `adaptive: false`, no rpm/tpm: fixed concurrency,
                                   each cell retries its own 429 after its Retry-After (no target: for comparison)
             `adaptive`            max_parallel 256, adaptive (the default), no rpm/tpm: treadle finds the rate
                                   target: wall <= 1.05 x bound and < 2% of requests answered 429
             `told`                max_parallel 256, rpm/tpm set to the simulator's limit
                                   target: wall <= 1.02 x bound and no 429 at all
- `mixed`: the rpm1200 workload (headers on) plus a second model on a second simulator with no limits
  (same latency, max_parallel UNLIMITED_PARALLEL) and an independent LLM column on it over the same rows,
  every row admitted at once, execution slots = the two max_parallels: how long the unlimited column
  took (its last answer, from the trace) against its own bound (calls x latency / its max_parallel, in
  whole waves) while the limited one was throttled.

Bound: calls / (rpm / 60), or calls x tokens per call / (tpm / 60): what the targets are judged against.
It ignores the bucket's initial burst (LIMIT_WINDOW_S of the rate passes at once) and the last answer's
latency; "with burst" counts both (burst at once, the rest at the rate, plus one latency): the fastest the
simulator allows, below the bound by 4-6% at full size and by 18-30% with --quick (so --quick flatters
every runner). Fixed 8 has a slower bound of its own where the limit allows more than its 40 calls/s
(8 / 200 ms): calls x latency / 8 (rpm 6,000: 100 calls/s; tpm: 50 calls/s).
Wall: summary.json `wall_s` (the engine's time from its start to the last cell's end; loading the seed
and writing the run directory are not in it; the progress lines also give the time around
treadle.start() + wait()). Requests, 429s and the peak in flight are counted by the simulator (GET /stats).

A runner still going after --timeout-factor x bound is aborted (`RunController.abort()`) and shown as
"> Fx". `--quick` runs a fifth of the calls at the same rates (bounds 10 / 6 / 6 s); there the last
answer's latency alone is 2-3% of the bound, so a told runner that paces from the first request (not
spending the burst) lands at 1.02-1.03x and misses its 1.02x target by that much: judge told at full size.

    .venv/bin/python bench/rate_limits.py [--quick] [--only PATTERN ...] [--timeout-factor 4] [--list]
        [--results bench/RESULTS.md]

`--only` matches case ids like `rpm1200/hdr-on/adaptive`, `tpm/hdr-off/told`, `mixed/hdr-on/fixed8`
(`--list` prints them): a plain PATTERN is a substring, one with * ? [ a glob; several --only run
the cases any of them matches.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import os
import platform
import re
import shlex
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import treadle  # noqa: E402
from treadle.engine.errors import TreadleError  # noqa: E402
from treadle.engine.trace_reader import TraceReader, trace_path  # noqa: E402
from treadle.sim import SimConfig, SimulatorProcess  # noqa: E402
from treadle.sim.replies import make_reply, parse_request  # noqa: E402

MODEL = "bench-model"
LATENCY_MS = 200.0
LIMIT_WINDOW_S = 2.0
SIM_SEED = 15
CEILING = 256  # max_parallel of the fixed-256, adaptive and told runners
UNLIMITED_PARALLEL = 32  # max_parallel of the unlimited model in the mixed case
ROW_GROUP_SIZE = 250
QUICK_SCALE = 5
ABORT_WAIT_S = 120.0  # how long an aborted run may take to write what it has

# The tpm workload: every call costs the same, known number of tokens. A prompt of PROMPT_CHARS
# characters as the only (user) message; the simulator answers "Simulated answer to: " + the first 80
# characters of it (101 characters, 26 tokens), cut at MAX_TOKENS (80 characters = 20 tokens) because
# the model config asks for max_tokens: MAX_TOKENS, so the answer is always exactly MAX_TOKENS tokens.
PROMPT_CHARS = 372
MAX_TOKENS = 20
FILLER = "Count the widgets in every box, list the boxes that hold more than ten, and explain briefly. "


@dataclass(frozen=True)
class Workload:
    key: str
    calls: int
    rpm: int = 0
    tpm: int = 0

    def label(self) -> str:
        return f"rpm {self.rpm:,}" if self.rpm else f"tpm {self.tpm:,}"

    def calls_per_s(self, tokens_per_call: int) -> float:
        return self.rpm / 60 if self.rpm else self.tpm / 60 / tokens_per_call

    def bound_s(self, tokens_per_call: int) -> float:
        """calls / (rpm / 60), or calls x tokens per call / (tpm / 60)."""
        return self.calls / self.calls_per_s(tokens_per_call)

    def ideal_s(self, tokens_per_call: int) -> float:
        """The fastest the simulator allows: the bucket's burst at once, the rest at the rate, then one latency."""
        rate = self.calls_per_s(tokens_per_call)
        burst = math.floor(rate * LIMIT_WINDOW_S)
        return max(self.calls - burst, 0) / rate + LATENCY_MS / 1000


@dataclass(frozen=True)
class Runner:
    key: str
    label: str
    target_ratio: float | None  # wall / bound at most this
    target_429: float | None  # share of requests answered 429 below this (0: none at all)

    def model_fields(self, workload: Workload) -> dict[str, Any]:
        if self.key == "fixed256":
            return {"max_parallel": CEILING, "adaptive": False}
        if self.key == "fixed8":
            return {"max_parallel": 8, "adaptive": False}
        if self.key == "adaptive":
            return {"max_parallel": CEILING}
        told = {"rpm": workload.rpm} if workload.rpm else {"tpm": workload.tpm}
        return {"max_parallel": CEILING, **told}

    def target(self) -> str:
        if self.target_ratio is None:
            return "-"
        share = "0 429" if not self.target_429 else f"<{self.target_429:.0%} 429"
        return f"<={self.target_ratio:.2f}x, {share}"


RUNNERS = (
    Runner("fixed256", f"fixed {CEILING}", None, None),
    Runner("fixed8", "fixed 8", None, None),
    Runner("adaptive", "adaptive (untold)", 1.05, 0.02),
    Runner("told", "told rpm/tpm", 1.02, 0.0),
)


@dataclass(frozen=True)
class Case:
    workload: Workload
    headers: bool
    runner: Runner
    mixed: bool = False

    @property
    def id(self) -> str:
        first = "mixed" if self.mixed else self.workload.key
        return f"{first}/{'hdr-on' if self.headers else 'hdr-off'}/{self.runner.key}"


@dataclass
class Measured:
    case: Case
    calls: int
    bound_s: float
    ideal_s: float
    wall_s: float = math.nan  # summary.json wall_s
    total_s: float = math.nan  # measured around treadle.start() and wait(): building the run and outputs too
    stopped: bool = False  # aborted after timeout_factor x bound
    error: str | None = None  # the run could not start (e.g. the config was refused)
    requests: int = 0
    answered_429: int = 0
    peak_in_flight: int = 0
    cells_done: int = 0
    cells_failed: int = 0
    tokens_per_200: float | None = None  # (prompt + completion tokens) / answers, as the simulator counted them
    columns_end_s: dict[str, float] = field(default_factory=dict)  # mixed: each column's last done attempt
    columns_done: dict[str, int] = field(default_factory=dict)

    @property
    def share_429(self) -> float:
        return self.answered_429 / self.requests if self.requests else 0.0

    @property
    def ratio(self) -> float:
        return self.wall_s / self.bound_s

    def met(self) -> bool | None:
        runner = self.case.runner
        if runner.target_ratio is None:
            return None
        if self.error or self.stopped or self.cells_done < self.calls:
            return False
        if self.ratio > runner.target_ratio:
            return False
        return self.answered_429 == 0 if not runner.target_429 else self.share_429 < runner.target_429


# ---- the workload ---------------------------------------------------------------------------------


def prompt_text(row: int) -> str:
    head = f"Row {row:06d}. "
    body = (FILLER * (PROMPT_CHARS // len(FILLER) + 1))[: PROMPT_CHARS - len(head)]
    return head + body


def call_tokens() -> tuple[int, int]:
    """(prompt, completion) tokens of one call, by the simulator's own accounting of the body treadle sends."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt_text(0)}], "max_tokens": MAX_TOKENS}
    reply = make_reply(parse_request(json.dumps(body).encode()), None, False)
    return reply.prompt_tokens, reply.completion_tokens


def workloads(quick: bool, tokens_per_call: int) -> list[Workload]:
    scale = QUICK_SCALE if quick else 1
    tpm_calls = 1500
    # tpm such that the full workload's bound is 30 s: total tokens / (tpm / 60) = 30.
    tpm = round(tpm_calls * tokens_per_call * 60 / 30)
    return [
        Workload("rpm1200", 1000 // scale, rpm=1200),
        Workload("rpm6000", 3000 // scale, rpm=6000),
        Workload("tpm", tpm_calls // scale, tpm=tpm),
    ]


def all_cases(quick: bool, tokens_per_call: int) -> list[Case]:
    loads = workloads(quick, tokens_per_call)
    cases = [Case(w, headers, r) for w in loads for headers in (True, False) for r in RUNNERS]
    cases += [Case(loads[0], True, r, mixed=True) for r in RUNNERS]
    return cases


def selected(case: Case, patterns: list[str]) -> bool:
    if not patterns:
        return True
    return any(fnmatch.fnmatchcase(case.id, p) if any(c in p for c in "*?[") else p in case.id for p in patterns)


def pipeline(case: Case, url: str, unlimited_url: str | None) -> dict[str, Any]:
    w = case.workload
    model: dict[str, Any] = {"model": MODEL, "base_url": url, **case.runner.model_fields(w)}
    if w.tpm:
        model["max_tokens"] = MAX_TOKENS
    models = {"limited": model}
    columns: list[dict[str, Any]] = [{"name": "answer", "kind": "llm", "model": "limited", "prompt": "{{ text }}"}]
    slots = model["max_parallel"]
    if unlimited_url is not None:
        models["free"] = {"model": MODEL, "base_url": unlimited_url, "max_parallel": UNLIMITED_PARALLEL}
        columns.append({"name": "other", "kind": "llm", "model": "free", "prompt": "Other: {{ text }}"})
        slots += UNLIMITED_PARALLEL
    return {
        "seed": {"path": "seed.csv"},
        "models": models,
        "columns": columns,
        "run": {
            # Execution slots and admission never limit: every model can fill its own max_parallel and
            # every row is admitted at once.
            "max_parallel": slots,
            "row_group_size": ROW_GROUP_SIZE,
            "row_groups_in_flight": -(-w.calls // ROW_GROUP_SIZE),
        },
    }


# ---- one case -------------------------------------------------------------------------------------


def sim_stats(url: str) -> dict[str, Any]:
    root = url.removesuffix("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/stats", timeout=30) as answer:
        return json.loads(answer.read())


def column_ends(run_dir: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Each column's last done attempt (seconds since the run started) and its done count, from the trace."""
    ends: dict[str, float] = {}
    done: dict[str, int] = {}
    path = trace_path(run_dir)
    if not path.exists():
        return ends, done
    for trace in TraceReader(path):
        if trace.get("status") != "done":
            continue
        column = trace["column"]
        ends[column] = max(ends.get(column, 0.0), trace["t_end"])
        done[column] = done.get(column, 0) + 1
    return ends, done


def run_case(case: Case, workdir: Path, tokens_per_call: int, timeout_factor: float) -> Measured:
    w = case.workload
    m = Measured(case, w.calls, w.bound_s(tokens_per_call), w.ideal_s(tokens_per_call))
    sim = SimConfig(
        latency_ms=LATENCY_MS,
        rpm=w.rpm,
        tpm=w.tpm,
        limit_window_s=LIMIT_WINDOW_S,
        ratelimit_headers=case.headers,
        seed=SIM_SEED,
    )
    free = SimConfig(latency_ms=LATENCY_MS, seed=SIM_SEED) if case.mixed else None
    here = workdir / case.id.replace("/", "-")
    here.mkdir()
    pd.DataFrame({"text": [prompt_text(i) for i in range(w.calls)]}).to_csv(here / "seed.csv", index=False)
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(SimulatorProcess(sim))
        free_url = stack.enter_context(SimulatorProcess(free)) if free is not None else None
        config = pipeline(case, url, free_url)
        started = time.perf_counter()
        try:
            controller = treadle.start(config, base_dir=here, out=here / "run")
        except (TreadleError, ValueError) as exc:
            m.error = " ".join(str(exc).split())[:300]
            return m
        result = controller.wait(timeout=timeout_factor * m.bound_s)
        if result is None:
            m.stopped = True
            controller.abort()
            result = controller.wait(timeout=ABORT_WAIT_S)
            if result is None:
                raise RuntimeError(f"{case.id}: the run did not end within {ABORT_WAIT_S:g} s of abort()")
        m.total_s = time.perf_counter() - started
        summary = result.summary
        m.wall_s = float(summary["wall_s"])
        cells = summary["columns"]["answer"]["cells"]
        m.cells_done = int(cells.get("done", 0))
        m.cells_failed = int(cells.get("failed", 0))
        stats = sim_stats(url)
        m.requests = int(stats["requests_total"])
        m.answered_429 = int(stats["by_status"].get("429", 0))
        m.peak_in_flight = int(stats["max_in_flight"])
        answered = int(stats["by_status"].get("200", 0))
        if answered:
            m.tokens_per_200 = (stats["prompt_tokens"] + stats["completion_tokens"]) / answered
        if free_url is not None:
            m.columns_end_s, m.columns_done = column_ends(result.run_dir)
    return m


def warm_up(workdir: Path) -> None:
    """One small unmeasured run (imports, first-use code paths), on a simulator of its own."""
    here = workdir / "warm-up"
    here.mkdir()
    pd.DataFrame({"text": [prompt_text(i) for i in range(50)]}).to_csv(here / "seed.csv", index=False)
    with SimulatorProcess(SimConfig(latency_ms=LATENCY_MS)) as url:
        config = {
            "seed": {"path": "seed.csv"},
            "models": {"m": {"model": MODEL, "base_url": url, "max_parallel": 16}},
            "columns": [{"name": "answer", "kind": "llm", "model": "m", "prompt": "{{ text }}"}],
        }
        treadle.run(config, base_dir=here, out=here / "run")


# ---- tables ---------------------------------------------------------------------------------------


def wall_text(m: Measured, factor: float) -> tuple[str, str]:
    if m.error:
        return "-", "-"
    if m.stopped:
        return f"> {factor * m.bound_s:.1f}", f"> {factor:g}x"
    return f"{m.wall_s:.2f}", f"{m.ratio:.3f}"


def met_text(m: Measured) -> str:
    met = m.met()
    return "-" if met is None else "yes" if met else "NO"


def table(results: list[Measured], factor: float) -> Table:
    out = Table(title=None)
    headers = (
        "workload",
        "headers",
        "runner",
        "calls",
        "wall s",
        "bound s",
        "wall / bound",
        "with burst s",
        "requests",
        "429 %",
        "peak in flight",
        "target",
        "met",
    )
    for header in headers:
        out.add_column(header, justify="left" if header in ("workload", "headers", "runner", "target") else "right")
    for m in results:
        if m.case.mixed:
            continue
        wall, ratio = wall_text(m, factor)
        runner = m.case.runner.label
        if m.error:
            runner += " (not run: see below)"
        elif m.cells_done < m.calls:
            runner += f" ({m.calls - m.cells_done} not done, {m.cells_failed} failed)"
        out.add_row(
            m.case.workload.label(),
            "on" if m.case.headers else "off",
            runner,
            f"{m.calls:,}",
            wall,
            f"{m.bound_s:.1f}",
            ratio,
            f"{m.ideal_s:.1f}",
            f"{m.requests:,}",
            f"{100 * m.share_429:.1f}",
            str(m.peak_in_flight),
            m.case.runner.target(),
            met_text(m),
        )
    return out


def mixed_table(results: list[Measured], factor: float) -> Table | None:
    mixed = [m for m in results if m.case.mixed]
    if not mixed:
        return None
    out = Table(title=None)
    headers = (
        "runner (limited model)",
        "wall s",
        "limited: bound s",
        "wall / bound",
        "limited: 429 %",
        "met",
        "unlimited: done",
        "unlimited: end s",
        "unlimited: bound s",
        "end / bound",
    )
    for header in headers:
        out.add_column(header, justify="left" if header.startswith("runner") else "right")
    free_bound = unlimited_bound_s(mixed[0].calls)
    for m in mixed:
        wall, ratio = wall_text(m, factor)
        end = m.columns_end_s.get("other")
        done = m.columns_done.get("other", 0)
        out.add_row(
            m.case.runner.label + (" (not run: see below)" if m.error else ""),
            wall,
            f"{m.bound_s:.1f}",
            ratio,
            f"{100 * m.share_429:.1f}",
            met_text(m),
            f"{done:,} / {m.calls:,}",
            "-" if end is None else f"{end:.2f}",
            f"{free_bound:.2f}",
            "-" if end is None else f"{end / free_bound:.2f}",
        )
    return out


def unlimited_bound_s(calls: int) -> float:
    """calls x latency / max_parallel, in whole waves of max_parallel calls."""
    return math.ceil(calls / UNLIMITED_PARALLEL) * LATENCY_MS / 1000


def verdicts(results: list[Measured]) -> list[str]:
    lines = []
    for runner in RUNNERS:
        if runner.target_ratio is None:
            continue
        mine = [m for m in results if m.case.runner is runner]
        if not mine:
            continue
        missed = [m for m in mine if not m.met()]
        lines.append(f"{runner.label} ({runner.target()}): {len(mine) - len(missed)} of {len(mine)} cases met")
        for m in missed:
            if m.error:
                why = f"not run: {m.error}"
            elif m.stopped:
                why = "stopped at the timeout"
            else:
                why = f"wall/bound {m.ratio:.3f}, {m.answered_429:,} of {m.requests:,} requests answered 429"
                if m.cells_done < m.calls:
                    why += f", {m.calls - m.cells_done} cells not done"
            lines.append(f"  missed {m.case.id}: {why}")
    for m in results:
        if m.error and m.case.runner.target_ratio is None:
            lines.append(f"not run {m.case.id}: {m.error}")
    for m in results:
        if m.case.mixed and not m.error:
            end = m.columns_end_s.get("other")
            bound = unlimited_bound_s(m.calls)
            took = "did not finish" if end is None else f"took {end:.2f} s = {end / bound:.2f}x its bound {bound:.2f} s"
            lines.append(f"unlimited model's column beside {m.case.runner.label}: {took}")
    return lines


def render(results: list[Measured], factor: float, console: Console) -> None:
    console.print(table(results, factor))
    mixed = mixed_table(results, factor)
    if mixed is not None:
        console.print(
            f"Two models: the limited one as above (rpm workload, headers on) and an unlimited one "
            f"(max_parallel {UNLIMITED_PARALLEL}) with an independent column over the same rows:",
            highlight=False,
        )
        console.print(mixed)
    console.print(
        "wall = summary.json wall_s; bound = calls / (rpm/60) or calls x tokens per call / (tpm/60); with burst ="
        f" the bucket's {LIMIT_WINDOW_S:g} s burst at once, the rest at the rate, + one latency; requests, 429s and"
        " peak in flight as the simulator counted them",
        highlight=False,
    )
    for line in verdicts(results):
        console.print(line, highlight=False)


def markdown(results: list[Measured], factor: float) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
    render(results, factor, console)
    return console.export_text()


def write_results(path: Path, command: str, text: str, wall_total: float) -> None:
    section = (
        "## Rate limits\n\n"
        f"Command: `{command}` (simulator in its own process, {LATENCY_MS:g} ms latency, limits as token "
        f"buckets of {LIMIT_WINDOW_S:g} s of their rate; this machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; the whole bench took {wall_total:.0f} s). Wall = summary.json wall_s; "
        "bound = calls / rate; requests and 429s as the simulator counted them.\n"
        "\n```\n" + text.rstrip() + "\n```\n"
    )
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    found = re.search(r"^## Rate limits\n.*?(?=^## |\Z)", old, flags=re.S | re.M)
    new = old[: found.start()] + section + "\n" + old[found.end() :] if found else old.rstrip() + "\n\n" + section
    path.write_text(new.rstrip() + "\n", encoding="utf-8")


# ---- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"1/{QUICK_SCALE} of the calls at the same rates")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN", help="run the cases it matches")
    parser.add_argument("--timeout-factor", type=float, default=4.0, help="abort a run after F x its bound")
    parser.add_argument("--list", action="store_true", help="print the case ids and exit")
    parser.add_argument("--results", type=Path, help="write the tables into this markdown file's section")
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "bench/rate_limits.py", *sys.argv[1:]])
    prompt_tokens, completion_tokens = call_tokens()
    tokens_per_call = prompt_tokens + completion_tokens
    cases = [c for c in all_cases(args.quick, tokens_per_call) if selected(c, args.only)]
    if args.list:
        for case in cases:
            print(case.id)
        return
    if not cases:
        parser.error(f"no case matches {args.only}")
    console = Console(width=max(160, Console().width))
    console.print(f"$ {command}", highlight=False)
    loads = workloads(args.quick, tokens_per_call)
    tpm = next(w for w in loads if w.tpm)
    console.print(
        f"[dim]simulator: {LATENCY_MS:g} ms, limits as token buckets holding {LIMIT_WINDOW_S:g} s of their rate, "
        f"seed {SIM_SEED}; tpm workload: {prompt_tokens} prompt + {completion_tokens} completion = "
        f"{tokens_per_call} tokens a call (max_tokens {MAX_TOKENS}), tpm {tpm.tpm:,}; "
        f"{len(cases)} cases, each aborted after {args.timeout_factor:g}x its bound[/]",
        highlight=False,
    )
    results: list[Measured] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="treadle-rate-limits-") as tmp:
        workdir = Path(tmp)
        warm_up(workdir)
        for case in cases:
            console.print(f"[dim]{case.id}: {case.workload.calls:,} calls ...[/]", highlight=False)
            m = run_case(case, workdir, tokens_per_call, args.timeout_factor)
            results.append(m)
            if m.error:
                console.print(f"[dim]  not run: {m.error}[/]", highlight=False)
                continue
            wall, ratio = wall_text(m, args.timeout_factor)
            line = (
                f"  wall {wall} s ({ratio} of {m.bound_s:.1f} s; {m.total_s:.2f} s around treadle.start), "
                f"{m.requests:,} requests, {m.answered_429:,} answered 429 ({100 * m.share_429:.1f}%), "
                f"{m.cells_done:,}/{m.calls:,} cells done, target met: {met_text(m)}"
            )
            if case.workload.tpm and m.tokens_per_200 is not None and abs(m.tokens_per_200 - tokens_per_call) > 0.01:
                line += f"; the simulator counted {m.tokens_per_200:.2f} tokens per answer, not {tokens_per_call}!"
            if case.mixed:
                end = m.columns_end_s.get("other")
                line += "; unlimited column: none done" if end is None else f"; unlimited column ended at {end:.2f} s"
            console.print(f"[dim]{line}[/]", highlight=False)
    wall_total = time.perf_counter() - started
    console.print(f"$ {command}", highlight=False)
    render(results, args.timeout_factor, console)
    if args.quick:
        console.print(
            f"--quick: one latency ({LATENCY_MS:g} ms) is 2-3% of these bounds; told runners pacing from the first"
            " request miss 1.02x by about that: judge them at full size",
            highlight=False,
        )
    console.print(f"whole bench: {wall_total:.0f} s", highlight=False)
    if args.results is not None:
        write_results(args.results, command, markdown(results, args.timeout_factor), wall_total)
        console.print(f"written to {args.results}", highlight=False)


if __name__ == "__main__":
    main()
