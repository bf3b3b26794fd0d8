"""A response cache that cannot be used, seen in the terminal app: one warning line in the log, and the
run finishes with every value."""

from __future__ import annotations

import pandas as pd
from textual.widgets import Log
from tui_helpers import pipeline, until

from treadle.engine.response_cache import default_cache_path
from treadle.sim import SimulatorThread
from treadle.tui.app import TreadleApp

ROWS = 20


async def test_a_corrupt_cache_file_is_one_warning_line_in_the_log(tmp_path, make_controller):
    cache = default_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not a database" * 100)
    with SimulatorThread() as url:
        config = pipeline(tmp_path, ROWS, [{"name": "a", "kind": "llm", "model": "m", "prompt": "Answer {{ id }}"}])
        config["models"] = {"m": {"model": "sim-model", "base_url": url}}
        controller = make_controller(config, out=tmp_path / "run")
        app = TreadleApp(controller, summary_on_idle=False)
        async with app.run_test(size=(160, 48)) as pilot:
            log = app.query_one("#log", Log)

            def warnings() -> list[str]:
                return [line for line in log.lines if "response cache" in line]

            await until(pilot, lambda: app.status == "idle", what="the idle run")
            await until(pilot, lambda: bool(warnings()), what="the cache warning in the log")
            assert warnings() == [
                f"00:00 warning: response cache {cache} is not usable (file is not a database); "
                "the run goes on without it"
            ]
            controller.close()
            await until(pilot, lambda: controller.finished, what="the run to close")
    assert controller.wait(30).status == "done"
    assert pd.read_parquet(tmp_path / "run" / "output.parquet")["a"].notna().sum() == ROWS
