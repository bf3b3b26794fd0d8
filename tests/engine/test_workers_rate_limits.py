"""--workers N against one endpoint's limit: one adaptive value and pace per model, adapted by the parent
from every worker's answers, as one process would (checked at the simulator's request log)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pandas as pd

import treadle
from treadle.sim import SimConfig, SimulatorThread

LIMIT_RPM = 1200


def _pipeline(tmp_path: Path, url: str, rows: int) -> dict:
    seed = tmp_path / "seed.csv"
    pd.DataFrame({"q": [f"question {i}" for i in range(rows)]}).to_csv(seed, index=False)
    return {
        "seed": {"path": str(seed)},
        "models": {"m": {"model": "sim", "base_url": url, "max_parallel": 256}},
        "columns": [{"name": "a", "kind": "llm", "model": "m", "prompt": "{{ q }}"}],
        # Small groups, few in flight: both workers hold groups the whole run.
        "run": {"row_group_size": 20, "row_groups_in_flight": 4, "retries": 5, "early_stop": None},
    }


def _sim(url: str, what: str) -> dict:
    with urllib.request.urlopen(f"{url.removesuffix('/v1')}/{what}") as response:
        return json.loads(response.read())


def test_two_workers_meet_an_untold_rate_limit_as_one_process_does(tmp_path):
    sim = SimConfig(latency_ms=50, rpm=LIMIT_RPM, limit_window_s=1, ratelimit_headers=False, seed=3)
    with SimulatorThread(sim) as url:
        controller = treadle.start(_pipeline(tmp_path, url, 320), out=tmp_path / "run", workers=2)
        events = controller.subscribe()
        while events.get(timeout=60).type != "limit_adapted":  # the parent adapted the model's pace
            pass
        live, summary = controller.snapshot().rates["model:m"], controller.summary()["rate_limits"]["m"]
        result = controller.wait()
        log, stats = _sim(url, "requests")["requests"], _sim(url, "stats")
    assert result is not None and result.status == "done"
    refused = [e for e in log if e["status"] == 429]
    assert len(refused) <= 0.05 * len(log), (len(refused), len(log))
    # The pace held once learned: the rate admitted after the first third of the answers (the slow start
    # and the first 429s come before; on a loaded machine the workers' start-up stretches them).
    admitted = sorted(e["t"] for e in log if e["status"] == 200)[len(log) // 3 :]
    rpm = (len(admitted) - 1) / (admitted[-1] - admitted[0]) * 60
    assert 0.8 * LIMIT_RPM <= rpm <= 1.2 * LIMIT_RPM, rpm
    assert stats["max_in_flight"] <= 32  # the adaptive value, not the ceiling of 256
    # One value per model, the parent's: its pace learned from both workers' 429s, each change logged once.
    assert (live.source, live.adaptive, live.ceiling) == ("learned", True, 256)
    assert live.paced_rpm is not None and live.rate_limited_last_min >= 1
    rates = result.summary["rate_limits"]["m"]
    assert rates["source"] == "learned" and rates["changes"]
    assert all(change[3].startswith("429 from endpoint") for change in rates["changes"])
    # The counts of requests and rate-limited answers, live and at the end, are both workers'.
    assert summary["requests"] > 0 and summary["rate_limited"] >= 1
    assert (rates["requests"], rates["rate_limited"]) == (len(log), len(refused))
