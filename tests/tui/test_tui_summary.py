"""The TUI's summary shows the run's metrics: live (from the trace ring buffer) while the run is held
open, then from summary.json once it has ended; a run's limit change shows in its limits over time."""

from __future__ import annotations

import io

import pandas as pd
from rich.console import Console
from textual.widgets import Static
from tui_helpers import PROBE_DIR, pipeline, plain, until

import treadle
from treadle.sim import SimConfig, SimulatorThread
from treadle.tui.app import TreadleApp
from treadle.tui.screens import SummaryScreen, summary_table

CHECKED = [
    {"name": "answer", "kind": "python", "function": "tui_cols:checked"},
    {"name": "sentence", "kind": "template", "template": "the answer is {{ answer }}"},
]


def summary_text(app: TreadleApp) -> str:
    return "\n".join(plain(static) for static in app.screen.query(Static))


async def test_the_summary_shows_the_metrics_live_and_once_the_run_has_ended(tmp_path, tui_cols, make_controller):
    tui_cols.failing.add(1)
    controller = make_controller(pipeline(tmp_path, 8, CHECKED))
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle", what="the idle run")
        controller.set_limit("slots", 2)
        await pilot.press("s")
        assert isinstance(app.screen, SummaryScreen)
        await pilot.pause()
        live = summary_text(app)
        assert "metrics so far (live)" in live
        assert "attempts 15 · 0 retries · 0 timeouts · 1 failed" in live  # 8 answers, 7 sentences
        assert "throughput" in live and "concurrency peak" in live
        assert "queue wait vs run time" in live and "wait p95" in live and "run p50" in live
        assert "errors by class ValueError 1 failed" in live
        assert "limits row_groups 100 · slots 4 → 2 at" in live
        await pilot.press("escape")

        controller.close()  # the run ends: its summary opens by itself, from summary.json
        await until(
            pilot,
            lambda: isinstance(app.screen, SummaryScreen) and app.screen.summary["metrics"]["source"] == "trace.jsonl",
            what="the final summary",
        )
        await pilot.pause()  # the screen composes its body
        final = summary_text(app)
        assert "metrics so far" not in final
        assert "attempts 15 · 0 retries · 0 timeouts · 1 failed" in final
        assert "queue wait vs run time" in final and "errors by class ValueError 1 failed" in final
        assert "limits row_groups 100 · slots 4 → 2 at" in final
    result = controller.wait(30)
    assert result.summary["metrics"]["attempts"]["total"] == 15


async def test_the_summary_of_a_run_without_tracing_says_why_it_has_no_metrics(tmp_path, tui_cols, make_controller):
    config = pipeline(tmp_path, 4, CHECKED, trace=False)
    controller = make_controller(config)
    app = TreadleApp(controller, summary_on_idle=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.status == "idle", what="the idle run")
        await pilot.press("s")
        await pilot.pause()
        text = summary_text(app)
        assert "no metrics: they are computed from the trace, and this run had run.trace: false" in text
        assert "queue wait vs run time" not in text
        await pilot.press("escape")
        controller.close()


def test_the_summary_shows_tokens_and_cost_from_the_pipelines_prices(tmp_path):
    pd.DataFrame({"id": range(6), "q": [f"q{i}" for i in range(6)]}).to_csv(tmp_path / "seed.csv", index=False)
    price = {"input_per_1m": 2.0, "output_per_1m": 8.0}
    with SimulatorThread(SimConfig(latency_ms=5)) as url:
        config = {
            "seed": {"path": str(tmp_path / "seed.csv")},
            "models": {"m": {"model": "sim-model", "base_url": url, "prices": price}},
            "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "Answer {{ q }}"}],
        }
        result = treadle.run(config, base_dir=PROBE_DIR, out=tmp_path / "run")
    metrics = result.summary["metrics"]
    console = Console(width=120, file=io.StringIO(), color_system=None)
    console.print(summary_table(result.summary, show_latency=False))
    text = console.file.getvalue()
    assert "tokens and cost" in text
    tokens = metrics["tokens"]
    assert f"{tokens['in']:,}" in text and f"{tokens['out']:,}" in text
    assert f"{metrics['cost']['total']:,.4f}" in text and "no prices" not in text
    assert "queue wait vs run time" not in text  # measured times are left out with show_latency=False
