"""A model's rate in the TUI, over runs against a rate-limited simulator: the limits panel shows the
adaptive value under the ceiling and the 429s of the last minute; the log has a line per adaptive change."""

from __future__ import annotations

import re

from textual.widgets import Log
from tui_helpers import pipeline, plain, until

from treadle.engine.events import LimitAdapted, RunEvent
from treadle.engine.rate_limits import RateView
from treadle.sim import SimConfig, SimulatorThread
from treadle.tui.app import TreadleApp
from treadle.tui.model import event_line
from treadle.tui.widgets.limits import rate_text

LIMITED = SimConfig(rpm=600, limit_window_s=2, ratelimit_headers=False, latency_ms=20)


def llm_pipeline(tmp_path, url: str, rows: int) -> dict:
    config = pipeline(
        tmp_path, rows, [{"name": "a", "kind": "llm", "model": "m", "prompt": "Answer {{ id }}"}], max_parallel=64
    )
    config["models"] = {"m": {"model": "sim-model", "base_url": url, "max_parallel": 16}}
    return config


def view(**changes) -> RateView:
    fields = dict(
        ceiling=16,
        concurrency=16,
        in_flight=0,
        paced_rpm=None,
        tpm=None,
        source=None,
        requests_per_s=0.0,
        tokens_per_min=0.0,
        rate_limited_last_min=0,
        held_s=0.0,
        adaptive=True,
    )
    return RateView(**{**fields, **changes})


def test_a_rate_line_says_only_what_differs_from_the_ceiling_and_fits_the_panel():
    assert rate_text(view()).plain == "    0.0 req/s · 429s last min 0"
    busy = view(
        concurrency=12,
        paced_rpm=1180.4,
        source="learned",
        requests_per_s=19.6,
        tokens_per_min=45_300,
        rate_limited_last_min=3,
        held_s=0.42,
    )
    lines = rate_text(busy).plain.split("\n")
    assert lines == [
        "    adaptive 12 · pace 1,180/min learned · held 0.4s",
        "    19.6 req/s · 45.3k tokens/min · 429s last min 3",
    ]
    assert all(len(line) <= 58 - 2 for line in lines)  # the wide layout's panel, less its borders
    told = rate_text(view(paced_rpm=600.0, tpm=40_000.0, source="rpm")).plain
    assert told.startswith("    pace 600/min, 40,000 tokens/min told")
    assert "from headers" in rate_text(view(paced_rpm=500.0, source="headers")).plain


async def test_the_limits_panel_shows_the_adaptive_value_and_the_429s_of_a_rate_limited_model(
    tmp_path, make_controller
):
    with SimulatorThread(LIMITED) as url:
        controller = make_controller(llm_pipeline(tmp_path, url, 40))
        app = TreadleApp(controller, summary_on_idle=False)
        async with app.run_test(size=(160, 48)) as pilot:
            panel = app.limits_panel
            assert "model:m" in panel.names

            def shown() -> str:
                return plain(panel.rate_line("model:m"))

            await until(
                pilot,
                lambda: re.search(r"429s last min [1-9]", shown()) and "adaptive " in shown(),
                what="the adaptive value and the 429s in the limits panel",
            )
            rates = controller.snapshot().rates["model:m"]
            assert rates.ceiling == 16 and rates.concurrency < 16 and rates.source == "learned"
            assert "pace " in shown() and "learned" in shown()
            log = app.query_one("#log", Log)
            await until(
                pilot,
                lambda: any(" m: adaptive " in line and "429 from endpoint" in line for line in log.lines),
                what="a limit_adapted line in the log",
            )
            await until(pilot, lambda: app.status == "idle", what="the idle run")
            controller.close()
            await until(pilot, lambda: controller.finished, what="the run to close")
    assert controller.wait(30).status == "done"


def test_a_limit_adapted_event_is_one_log_line():
    paced = LimitAdapted(limit="model:planner", concurrency=12, paced_rpm=1180.4, reason="429 from endpoint")
    line = event_line(RunEvent(t=3.5, payload=paced))
    assert line == "00:03 planner: adaptive 12, pace 1,180/min (429 from endpoint)"
    unpaced = LimitAdapted(limit="model:m", concurrency=4, paced_rpm=None, reason="x")
    assert event_line(RunEvent(t=0, payload=unpaced)) == "00:00 m: adaptive 4 (x)"
