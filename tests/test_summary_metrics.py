"""summary.json's `metrics` and `limit_history` after real runs: a limit changed mid-run through the
controller, prices given in the pipeline (LLM columns on the simulator), and what the report and the
trace export take from them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

import treadle
from treadle.engine.analysis.chrome_trace import SLOTS_PID, export_chrome
from treadle.engine.analysis.cost import PRICE_KEYS
from treadle.engine.analysis.metrics import run_metrics
from treadle.engine.controller import RunController
from treadle.engine.errors import ConfigError
from treadle.engine.pipeline import ModelPrices
from treadle.engine.run import RunOptions
from treadle.engine.trace_reader import TraceReader
from treadle.report import print_report
from treadle.sim import SimConfig, SimulatorThread

PROBE_DIR = Path(__file__).parent / "data" / "probe"
PRICE = {"input_per_1m": 0.15, "output_per_1m": 0.6}


def seed(tmp_path: Path, rows: int) -> str:
    path = tmp_path / "seed.csv"
    pd.DataFrame({"id": range(rows), "q": [f"question {i}" for i in range(rows)]}).to_csv(path, index=False)
    return str(path)


def read_traces(run_dir: Path) -> list[dict]:
    return list(TraceReader(run_dir))


def test_summary_json_holds_the_metrics_and_the_limit_history_of_a_run_whose_limit_changed(tmp_path, probe):
    probe.failing_rows = {6, 9}
    probe.close_gate()
    config = {
        "seed": {"path": seed(tmp_path, 24)},
        "columns": [
            {"name": "a", "kind": "python", "function": "probe_cols:gated"},
            {"name": "b", "kind": "python", "function": "probe_cols:flaky", "depends_on": ["a"]},
        ],
        "run": {"row_group_size": 6, "max_parallel": 4, "backoff_s": 0, "salvage_rounds": 0},
    }
    run_dir = tmp_path / "run"
    controller = RunController(treadle.load(config, base_dir=PROBE_DIR), RunOptions(out=run_dir)).start()
    probe.wait_for(lambda p: p.running == 4)  # four cells hold the four slots
    controller.set_limit("slots", 2)
    probe.open_gate()
    result = controller.wait(30)
    assert result is not None and result.status == "failed"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary == result.summary
    history = summary["limit_history"]
    [(start, before), (changed_at, after)] = history["slots"]
    assert (start, before, after) == (0.0, 4, 2)
    assert 0 < changed_at <= summary["wall_s"]
    assert history["row_groups"] == [[0.0, summary["limits"]["row_groups"]["total"]]]

    metrics = summary["metrics"]
    traces = read_traces(run_dir)
    statuses = Counter(t["status"] for t in traces)
    assert metrics["source"] == "trace.jsonl"
    assert metrics["attempts"]["total"] == len(traces) == 48  # a and b ran for every row
    assert metrics["attempts"]["failed"] == statuses["failed"] == 2
    assert metrics["errors"]["by_class"] == {"ValueError": {"retry": 0, "failed": 2, "timeout": 0, "cancelled": 0}}
    throughput = metrics["throughput"]
    assert 1 <= len(throughput["done"]) <= 120 and len(throughput["failed"]) == len(throughput["done"])
    assert sum(throughput["done"]) == statuses["done"] and sum(throughput["failed"]) == 2
    assert throughput["mean_per_s"] > 0
    for name in ("a", "b"):
        column = metrics["columns"][name]
        waits = sorted(t["t_start"] - t["t_ready"] for t in traces if t["column"] == name)
        assert column["attempts"] == len(waits)
        assert column["queue_wait_s"]["total"] == pytest.approx(sum(waits), abs=1e-4)
        assert column["queue_wait_s"]["p50"] <= column["queue_wait_s"]["p95"]
        assert column["run_s"]["p50"] == pytest.approx(summary["columns"][name]["latency_s"]["p50"], abs=1e-5)
        assert column["tokens_in"] == column["tokens_out"] == 0 and column["cost"] is None
    # Queue wait vs run time: cells waited for the gate-held slots.
    assert metrics["columns"]["a"]["queue_wait_s"]["total"] > metrics["columns"]["a"]["run_s"]["total"] > 0
    conc = metrics["concurrency"]
    assert conc["slot_limit"] == 4 and conc["peak_in_flight"] == 4
    assert 2 < conc["mean_slot_limit"] < 4  # 4 slots until the change, 2 after
    assert 0 < conc["slot_utilisation"] <= 1
    assert conc["efficiency_share_of_limit"] == pytest.approx(
        conc["parallel_efficiency"] / conc["mean_slot_limit"], rel=1e-3
    )
    assert metrics["tokens"] == {"in": 0, "out": 0} and metrics["cost"] is None

    # Without an --events file, metrics and the Chrome trace draw the limit from summary.json's history.
    m = run_metrics(run_dir)
    assert [v for _, v in m["limits"]["slots"]["series"]] == [4, 2, 2]
    assert m["limits"]["slots"]["series"][1][0] == pytest.approx(changed_at)
    export_chrome(run_dir, tmp_path / "trace.json")
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    limit = [e for e in events if e["ph"] == "C" and (e["pid"], e["name"]) == (SLOTS_PID, "slot limit")]
    assert [e["args"]["slots"] for e in limit] == [4, 2, 2]
    assert limit[1]["ts"] == pytest.approx(changed_at * 1e6)
    # An --events file is still taken when given.
    events_file = tmp_path / "events.jsonl"
    events_file.write_text(json.dumps({"type": "limit_changed", "t": 0.001, "limit": "slots", "old": 4, "new": 3}))
    assert [v for _, v in run_metrics(run_dir, events=events_file)["limits"]["slots"]["series"]] == [4, 3, 3]


def test_prices_in_the_pipeline_give_the_cost_in_summary_json_and_the_report(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=5)) as url:
        config = {
            "seed": {"path": seed(tmp_path, 10)},
            "models": {"m": {"model": "sim-model", "base_url": url, "max_parallel": 3, "prices": PRICE}},
            "columns": [
                {"name": "a", "kind": "llm", "model": "m", "prompt": "Answer {{ q }}"},
                {"name": "three", "kind": "python", "function": "ctx_cols:ask_three"},
            ],
            "run": {"row_group_size": 5, "max_parallel": 4},
        }
        run_dir = tmp_path / "run"
        result = treadle.run(config, base_dir=PROBE_DIR, out=run_dir)
    assert result.status == "done"
    out = pd.read_parquet(run_dir / "output.parquet")
    tokens_in = sum(u["prompt_tokens"] for c in ("a__usage", "three__usage") for u in out[c])
    tokens_out = sum(u["completion_tokens"] for c in ("a__usage", "three__usage") for u in out[c])
    expected = tokens_in / 1e6 * PRICE["input_per_1m"] + tokens_out / 1e6 * PRICE["output_per_1m"]

    metrics = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert metrics["tokens"] == {"in": tokens_in, "out": tokens_out}
    assert metrics["cost"]["total"] == pytest.approx(expected, abs=1e-6)
    assert metrics["cost"]["prices"] == {"m": PRICE} and metrics["cost"]["unpriced_models"] == []
    model = metrics["models"]["m"]
    assert (model["tokens_in"], model["tokens_out"]) == (tokens_in, tokens_out)
    assert model["cost"] == pytest.approx(expected, abs=1e-6) and model["requests"] == 10 + 30
    columns = metrics["columns"]
    assert columns["a"]["model"] == "m" and columns["a"]["cost"] > 0
    assert columns["three"]["tokens_counted_in"] == "three:llm"  # its calls' tokens, counted once
    assert metrics["calls"]["done"] == 30

    # `treadle report` takes the pipeline's prices from summary.json; given prices override them.
    assert run_metrics(run_dir)["cost"]["total"] == metrics["cost"]["total"]
    doubled = {"m": {k: 2 * v for k, v in PRICE.items()}}
    assert run_metrics(run_dir, prices=doubled)["cost"]["total"] == pytest.approx(2 * expected, abs=1e-6)
    console = Console(record=True, width=160, color_system=None)
    print_report(run_dir, console)
    assert f"{metrics['cost']['total']:,.4f}" in console.export_text()


def test_model_prices_are_validated():
    assert tuple(ModelPrices.model_fields) == PRICE_KEYS
    for prices, problem in (
        ({"input_per_1m": -1, "output_per_1m": 1}, "models.m.prices.input_per_1m: should be greater than or equal"),
        ({"input_per_1m": 1}, "models.m.prices: missing required field 'output_per_1m'"),
        ({"input_per_1m": 1, "output_per_1m": 1, "per_call": 2}, "models.m.prices.per_call: unknown field"),
        ({"input_per_1m": float("inf"), "output_per_1m": 1}, "models.m.prices.input_per_1m: should be a finite"),
    ):
        config = {
            "seed": {"path": str(PROBE_DIR / "probe_cols.py")},
            "models": {"m": {"model": "x", "prices": prices}},
            "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "hi"}],
        }
        with pytest.raises(ConfigError, match=problem):
            treadle.load(config, base_dir=PROBE_DIR)


BURN = """\
import time


def _burn(seconds):
    started = time.thread_time()
    while time.thread_time() - started < seconds:
        pass
    return time.thread_time() - started


async def on_the_loop(row):
    return _burn(0.02)


def in_the_pool(row):
    return _burn(0.1)
"""


def test_engine_cpu_is_the_loop_threads_alone(tmp_path):
    # CPU spent on the engine loop counts; CPU spent on other threads (sync columns here, an
    # in-process endpoint or simulator likewise) does not. Each cell reports the CPU it burned.
    (tmp_path / "burn.py").write_text(BURN)
    config = {
        "seed": {"path": seed(tmp_path, 4)},
        "columns": [
            {"name": "on_the_loop", "kind": "python", "function": "burn:on_the_loop"},
            {"name": "in_the_pool", "kind": "python", "function": "burn:in_the_pool"},
        ],
    }
    result = treadle.run(config, base_dir=tmp_path, out=tmp_path / "run")
    assert result.status == "done"
    on_loop, in_pool = result.output["on_the_loop"].sum(), result.output["in_the_pool"].sum()
    engine_cpu = result.summary["engine_cpu_s"]
    assert on_loop - 1e-3 <= engine_cpu < on_loop + in_pool, (engine_cpu, on_loop, in_pool)
