"""Running the simulator from sync code (its own thread) and in a child process."""

from __future__ import annotations

import gc
import json
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from treadle.sim import BookError, SimConfig, Simulator, SimulatorProcess, SimulatorThread


def ask(url: str, content: str = "hi", key: str = "") -> str:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    request = urllib.request.Request(f"{url}/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["choices"][0]["message"]["content"]


def test_in_thread_serves_sync_callers_and_shuts_down_quietly() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = Simulator(SimConfig(latency_ms=1)).in_thread()
        with runner as url:
            assert ask(url, "from a thread") == "Simulated answer to: from a thread"
            assert runner.stats()["by_status"] == {"200": 1}
            runner.reset_stats()
            assert runner.stats()["requests_total"] == 0
        gc.collect()
    assert [str(w.message) for w in caught] == []


def test_thread_start_failure_is_raised_in_the_caller(tmp_path: Path) -> None:
    with pytest.raises(BookError), SimulatorThread(SimConfig(book=str(tmp_path / "missing.yaml"))):
        pass


def test_separate_process_runner_passes_the_whole_config(tmp_path: Path) -> None:
    book = tmp_path / "book.yaml"
    book.write_text("rules: [{match: 'far', reply: 'near'}]")
    config = SimConfig(book=str(book), api_key="proc-key", models=["m"], seed=1, latency_ms=1)
    with SimulatorProcess(config) as url:
        assert url.startswith("http://127.0.0.1:")
        assert ask(url, "from afar", key="proc-key") == "near"
        with pytest.raises(urllib.error.HTTPError) as caught:
            ask(url, "no key")
        caught.value.close()
    assert caught.value.code == 401
