"""`treadle report` and the TUI's end-of-run summary over a run against a rate-limited simulator: each
model's requests, 429s, final pace and its source, every adaptive change and why, the first row's time;
and nothing of it for a run whose summary.json predates them."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from rich.console import Console

import treadle
from treadle.report import print_report
from treadle.sim import SimConfig, SimulatorThread
from treadle.tui.screens import summary_table


@pytest.fixture(scope="module")
def limited_run(tmp_path_factory):
    """A finished 40-row run of one adaptive model against an endpoint allowing 600 requests a minute."""
    tmp = tmp_path_factory.mktemp("limited")
    pd.DataFrame({"id": range(40), "q": [f"q{i}" for i in range(40)]}).to_csv(tmp / "seed.csv", index=False)
    with SimulatorThread(SimConfig(rpm=600, limit_window_s=2, ratelimit_headers=False, latency_ms=20)) as url:
        config = {
            "seed": {"path": str(tmp / "seed.csv")},
            "models": {"m": {"model": "sim-model", "base_url": url, "max_parallel": 16}},
            "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "Answer {{ q }}"}],
        }
        result = treadle.run(config, base_dir=tmp, out=tmp / "run")
    assert result.status == "done"
    return result


def text_of(renderable, width: int = 160) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def report_text(run_dir) -> str:
    console = Console(width=200, file=io.StringIO(), color_system=None)
    print_report(run_dir, console)
    return console.file.getvalue()


def test_the_report_shows_each_models_requests_429s_pace_and_every_adaptive_change(limited_run):
    rates = limited_run.summary["rate_limits"]["m"]
    assert rates["rate_limited"] > 0 and rates["changes"]  # the endpoint did limit the run
    text = report_text(limited_run.run_dir)
    assert "Rate limits per model" in text and "asked to wait (429)" in text
    row = next(line for line in text.splitlines() if line.startswith("│ m "))
    assert f"{rates['requests']:,}" in row and f"{rates['rate_limited']:,}" in row
    assert f"{rates['paced_rpm']:,.0f}/min learned from 429s" in row
    assert f"{rates['concurrency']} of 16" in row
    assert "Adaptive changes" in text
    assert text.count("429 from endpoint") == len(rates["changes"])  # all of them, with their reasons
    assert "first complete row after" in text


def test_the_tui_summary_lists_the_same(limited_run):
    rates = limited_run.summary["rate_limits"]["m"]
    text = text_of(summary_table(limited_run.summary))
    assert "rate limits" in text and f"{rates['paced_rpm']:,.0f}/min learned from 429s" in text
    assert "adaptive changes (last 10 per model)" in text and "429 from endpoint" in text
    assert "first complete row after" in text
    stable = text_of(summary_table(limited_run.summary, show_latency=False))
    assert "first complete row" not in stable  # a measured time: left out of screenshots


def test_a_run_from_before_rate_limits_shows_none_of_it(limited_run, tmp_path):
    old = {k: v for k, v in limited_run.summary.items() if k not in ("rate_limits", "first_row_s")}
    assert "rate limits" not in text_of(summary_table(old)).lower()
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps(old), encoding="utf-8")
    text = report_text(run_dir)
    assert "Rate limits" not in text and "Adaptive changes" not in text and "first complete row" not in text
