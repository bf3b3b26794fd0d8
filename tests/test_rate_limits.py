"""Rate limits over real HTTP: treadle against the simulator's limits, checked at its request log."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import treadle
from treadle.engine.run import RunOptions
from treadle.sim import SimConfig, SimulatorThread

sys.path.insert(0, str(Path(__file__).parent / "sim"))
from sim_helpers import early_arrivals
from test_tracing_exports import load_trace, validate_trace

from treadle.engine.analysis.chrome_trace import export_chrome


def pipeline(tmp_path: Path, rows: int, models: dict[str, dict], columns: list[dict] | None = None) -> dict:
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"q": [f"question {i}" for i in range(rows)]}).to_csv(seed, index=False)
    columns = columns or [
        {"name": f"answer_{name}", "kind": "llm", "model": name, "prompt": "{{ q }}"} for name in models
    ]
    return {
        "seed": {"path": str(seed)},
        "models": {name: {"model": "sim", **config} for name, config in models.items()},
        "columns": columns,
        "run": {"row_groups_in_flight": 100, "retries": 5, "early_stop": None},
    }


@pytest.mark.parametrize("headers", [True, False])
def test_untold_the_pace_settles_at_the_endpoints_rate_and_waits_are_honoured(tmp_path, headers):
    sim = SimConfig(latency_ms=50, rpm=1200, limit_window_s=1, ratelimit_headers=headers, seed=3)
    with SimulatorThread(sim) as url:
        config = pipeline(tmp_path, 160, {"m": {"base_url": url, "max_parallel": 256}})
        result = treadle.run(config, out=tmp_path / "run")
        log = _requests(url)
    assert result.status == "done"
    refused = [e for e in log if e["status"] == 429]
    assert len(refused) <= 0.05 * len(log), (len(refused), len(log))
    assert early_arrivals(in_flight_grace(log)) == []
    rates = result.summary["rate_limits"]["m"]
    assert rates["source"] == ("headers" if headers else "learned")
    admitted = sorted(e["t"] for e in log if e["status"] == 200)
    assert 0.8 * 1200 <= (len(admitted) - 1) / (admitted[-1] - admitted[0]) * 60 <= 1.2 * 1200
    # Told, the pace is the endpoint's; untold, a guess (a cut after a quick second refusal) creeps up to
    # find a raised limit, to at most twice itself: how far by the end depends on how long the run took.
    assert rates["paced_rpm"] <= (1.2 if headers else 2.0) * 1200
    assert all(len(change) == 4 and change[3] for change in rates["changes"])
    # The Chrome trace shows each change: a counter of the adaptive value and pace, and why.
    events = validate_trace(load_trace(Path(export_to(result.run_dir, tmp_path / "trace.json"))))
    adapted = [e for e in events if e["name"] == "m limit adapted"]
    assert [e["args"]["reason"] for e in adapted] == [change[3] for change in rates["changes"]]
    assert len([e for e in events if e["name"] == "m rate" and e["ph"] == "C"]) == len(rates["changes"])


def test_a_503_that_asks_to_wait_holds_every_request_to_that_model(tmp_path):
    sim = SimConfig(latency_ms=20, overload_rate=0.1, overload_retry_after_s=0.3, seed=5)
    with SimulatorThread(sim) as url:
        # Not adaptive: only the hold is tested (an adaptive model would also slow its pace after each
        # 503, which takes this run from ~4 s to ~20 s).
        config = pipeline(tmp_path, 60, {"m": {"base_url": url, "max_parallel": 8, "adaptive": False}})
        result = treadle.run(config, out=tmp_path / "run")
        log = _requests(url)
    assert result.status == "done"
    assert any(e["status"] == 503 for e in log)
    assert early_arrivals(in_flight_grace(log)) == []
    assert result.summary["rate_limits"]["m"]["rate_limited"] >= 1


def test_a_told_rpm_holds_over_every_window_with_no_refusal(tmp_path):
    sim = SimConfig(latency_ms=20, rpm=600, limit_window_s=1, seed=2)
    with SimulatorThread(sim) as url:
        config = pipeline(tmp_path, 40, {"m": {"base_url": url, "max_parallel": 64, "rpm": 600}})
        result = treadle.run(config, out=tmp_path / "run")
        log = _requests(url)
    assert result.status == "done"
    assert [e for e in log if e["status"] == 429] == []
    times = sorted(e["t"] for e in log)
    for i, t in enumerate(times):  # 10 a second: never more than 11 in any 1-second window
        assert sum(1 for u in times[i:] if u < t + 1.0) <= 11


def test_two_models_with_different_limits_both_progress_and_the_unlimited_one_is_not_held(tmp_path):
    slow = SimConfig(latency_ms=20, rpm=600, limit_window_s=1, ratelimit_headers=False, seed=1)
    fast = SimConfig(latency_ms=20, seed=1)
    with SimulatorThread(slow) as slow_url, SimulatorThread(fast) as fast_url:
        config = pipeline(
            tmp_path,
            40,
            {"slow": {"base_url": slow_url, "max_parallel": 64}, "fast": {"base_url": fast_url, "max_parallel": 64}},
        )
        result = treadle.run(config, out=tmp_path / "run")
        slow_log, fast_log = _requests(slow_url), _requests(fast_url)
    assert result.status == "done"
    assert len(fast_log) == 40 and {e["status"] for e in fast_log} == {200}
    # the unlimited model's 40 calls were done long before the limited one's (10 a second) were
    assert max(e["t_end"] for e in fast_log) - min(e["t"] for e in fast_log) < 2.0
    assert sum(1 for e in slow_log if e["status"] == 200) == 40


def export_to(run_dir: Path, out: Path) -> Path:
    export_chrome(run_dir, out)
    return out


def in_flight_grace(log: list[dict], grace_s: float = 0.05) -> list[dict]:
    """The log as if each answer reached treadle `grace_s` after it left the simulator (requests sent
    before treadle read a refusal may still arrive after it left), with the same end of each wait."""
    return [
        {**e, "t_end": e["t_end"] + grace_s, "retry_after_s": e["retry_after_s"] - grace_s}
        if e["retry_after_s"] is not None and e["t_end"] is not None
        else e
        for e in log
    ]


def _requests(url: str) -> list[dict]:
    import json
    import urllib.request

    base = url.removesuffix("/v1")
    with urllib.request.urlopen(f"{base}/requests") as response:
        return json.loads(response.read())["requests"]


def test_rows_finish_early_the_oldest_row_first(tmp_path):
    # Two dependent columns, 4 in flight: a row's second cell goes before a newer row's first, so the
    # first complete row comes after about two latencies, not after every row's first column.
    with SimulatorThread(SimConfig(latency_ms=50, seed=1)) as url:
        config = pipeline(
            tmp_path,
            40,
            {"m": {"base_url": url, "max_parallel": 4}},
            columns=[
                {"name": "plan", "kind": "llm", "model": "m", "prompt": "{{ q }}"},
                {"name": "code", "kind": "llm", "model": "m", "prompt": "{{ plan }}"},
            ],
        )
        result = treadle.run(config, out=tmp_path / "run")
    assert result.status == "done"
    assert result.summary["first_row_s"] < 0.3 * result.summary["wall_s"], result.summary["first_row_s"]


def test_a_pause_during_a_rate_limit_wait_holds(tmp_path):
    sim = SimConfig(latency_ms=20, rpm=60, limit_window_s=1, ratelimit_headers=False, seed=4)
    with SimulatorThread(sim) as url:
        loaded = treadle.load(pipeline(tmp_path, 6, {"m": {"base_url": url, "max_parallel": 8}}))
        controller = treadle.RunController(loaded, RunOptions(out=tmp_path / "run"))
        events = controller.subscribe()
        controller.start()
        while events.get(timeout=30).type != "limit_adapted":  # a 429 came: the model waits
            pass
        controller.pause()
        before = _requests(url)
        held_until = max(e["t_end"] + e["retry_after_s"] for e in before if e["retry_after_s"] is not None)
        time.sleep(max(0.0, held_until - before[-1]["t"]) + 1.0)  # sync-ok: the wait runs out while paused
        during = _requests(url)
        controller.resume()
        result = controller.wait()
    assert len(during) == len(before), "a request started while the run was paused"
    assert result is not None and result.status == "done"


def test_budgets_set_on_the_controller_pace_a_running_model(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=20, seed=1)) as url:
        loaded = treadle.load(pipeline(tmp_path, 12, {"m": {"base_url": url, "max_parallel": 8}}))
        controller = treadle.RunController(loaded, RunOptions(out=tmp_path / "run", hold_open=True))
        events = controller.subscribe()
        controller.start()
        with pytest.raises(ValueError, match="unknown model"):
            controller.set_budgets("nope", rpm=60)
        with pytest.raises(ValueError, match=r"'m\.rpm' must be from 1"):
            controller.set_budgets("m", rpm=0)
        controller.set_budgets("m", rpm=600, tpm=100_000)
        view = controller.snapshot().rates["model:m"]
        while events.get(timeout=30).type != "idle":  # every cell finished; the run waits to be closed
            pass
        controller.close()
        result = controller.wait()
    assert (view.paced_rpm, view.tpm, view.source) == (600.0, 100_000.0, "rpm")
    assert result is not None and result.status == "done"
    assert result.summary["rate_limits"]["m"]["changes"][-1][3] == "budgets set: rpm 600, tpm 100000"
