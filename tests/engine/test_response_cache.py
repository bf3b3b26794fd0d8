"""The response cache end to end: runs against the simulator over real HTTP, counted by its request log."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import MappingProxyType

import pandas as pd
import pytest
import yaml

import treadle
from treadle.engine import response_cache
from treadle.engine.errors import ConfigError
from treadle.engine.events import CacheUnavailable
from treadle.engine.generators import build_generators
from treadle.engine.generators.llm import LLMGenerator, chat_messages
from treadle.engine.response_cache import RequestKeys, ResponseCache, default_cache_path, request_key
from treadle.engine.run import RunOptions
from treadle.sim import SimConfig, SimulatorThread

ROWS = 12


def pipeline(tmp_path: Path, url: str, second_prompt: str = "Judge {{ a }}", **model) -> dict:
    pd.DataFrame({"q": [f"question {i}" for i in range(ROWS)]}).to_csv(tmp_path / "seed.csv", index=False)
    return {
        "seed": {"path": "seed.csv"},
        "models": {"m": {"model": "sim-model", "base_url": url, "max_parallel": 8, **model}},
        "columns": [
            {"name": "a", "kind": "llm", "model": "m", "prompt": "Answer {{ q }}"},
            {"name": "b", "kind": "llm", "model": "m", "prompt": second_prompt},
        ],
        "run": {"row_group_size": 5, "max_parallel": 16, "backoff_s": 0},
    }


def requests_sent(url: str) -> list[dict]:
    """The simulator's request log, read as any client would: GET /requests."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/requests") as answer:
        return json.load(answer)["requests"]


def run(tmp_path: Path, cfg: dict, out: str, **options) -> treadle.RunResult:
    return treadle.run(cfg, base_dir=tmp_path, out=tmp_path / out, **options)


def output(tmp_path: Path, out: str) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / out / "output.parquet")


def summary(tmp_path: Path, out: str) -> dict:
    return json.loads((tmp_path / out / "summary.json").read_text())


def test_a_second_identical_run_sends_no_request_and_writes_the_same_output(tmp_path):
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url)
        first = run(tmp_path, cfg, "first")
        sent_first = len(requests_sent(url))
        second = run(tmp_path, cfg, "second")
        sent_second = len(requests_sent(url)) - sent_first
    assert first.status == second.status == "done"
    assert sent_first == 2 * ROWS
    assert sent_second == 0
    pd.testing.assert_frame_equal(output(tmp_path, "first"), output(tmp_path, "second"))
    cache = summary(tmp_path, "second")["cache"]
    assert (cache["hits"], cache["misses"]) == (2 * ROWS, 0)
    assert cache["tokens_saved"]["m"]["prompt"] > 0
    assert summary(tmp_path, "first")["cache"]["misses"] == 2 * ROWS
    assert default_cache_path().exists()


def test_a_changed_second_prompt_sends_one_request_per_row(tmp_path):
    with SimulatorThread() as url:
        run(tmp_path, pipeline(tmp_path, url), "first")
        before = len(requests_sent(url))
        result = run(tmp_path, pipeline(tmp_path, url, second_prompt="Judge carefully: {{ a }}"), "second")
        sent = requests_sent(url)[before:]
    assert result.status == "done"
    assert len(sent) == ROWS
    assert all("carefully" in json.dumps(entry) for entry in sent) or len({e["index"] for e in sent}) == ROWS


def test_no_cache_and_refresh_cache(tmp_path):
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url)
        run(tmp_path, cfg, "first")
        n = len(requests_sent(url))
        run(tmp_path, cfg, "off", cache="off")
        assert len(requests_sent(url)) - n == 2 * ROWS
        n = len(requests_sent(url))
        run(tmp_path, cfg, "refresh", cache="refresh")
        assert len(requests_sent(url)) - n == 2 * ROWS
        n = len(requests_sent(url))
        run(tmp_path, cfg, "again")
        assert len(requests_sent(url)) - n == 0
    assert summary(tmp_path, "off")["cache"] == {"enabled": False}
    assert summary(tmp_path, "refresh")["cache"]["stored"] == 2 * ROWS


def test_cache_false_on_the_model_or_a_column(tmp_path):
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url, cache=False)
        run(tmp_path, cfg, "first")
        n = len(requests_sent(url))
        run(tmp_path, cfg, "second")
        assert len(requests_sent(url)) - n == 2 * ROWS
        cfg = pipeline(tmp_path, url)
        cfg["columns"][1]["cache"] = False
        run(tmp_path, cfg, "third")
        n = len(requests_sent(url))
        run(tmp_path, cfg, "fourth")
        assert len(requests_sent(url)) - n == ROWS


def test_run_cache_names_the_file_relative_to_the_pipeline(tmp_path):
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url)
        cfg["run"]["cache"] = "my-cache.sqlite"
        run(tmp_path, cfg, "first")
    assert (tmp_path / "my-cache.sqlite").exists()
    assert not default_cache_path().exists()


def cache_events(controller: treadle.RunController) -> list[CacheUnavailable]:
    return [e.payload for e in controller.snapshot().recent_events if isinstance(e.payload, CacheUnavailable)]


def test_a_corrupt_cache_file_is_one_event_and_the_run_goes_on(tmp_path, capsys):
    path = default_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with SimulatorThread() as url:
        controller = treadle.start(pipeline(tmp_path, url), base_dir=tmp_path, out=tmp_path / "first")
        result = controller.wait()
        assert len(requests_sent(url)) == 2 * ROWS
    assert result.status == "done" and output(tmp_path, "first")[["a", "b"]].notna().all().all()
    [event] = cache_events(controller)
    assert event.path == str(path) and "not a database" in event.reason
    types = [e.type for e in controller.snapshot().recent_events]
    assert types[:2] == ["run_started", "cache_unavailable"]  # when the file cannot be opened: right away
    assert summary(tmp_path, "first")["cache"] == {**summary(tmp_path, "first")["cache"], "enabled": False}
    assert summary(tmp_path, "first")["cache"]["problem"] == event.reason
    assert capsys.readouterr().err == ""  # the engine prints nothing: displays show the event


def test_an_unwritable_cache_directory_is_one_event_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache's directory should be")
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url)
        cfg["run"]["cache"] = "not-a-dir/responses.sqlite"
        controller = treadle.start(cfg, base_dir=tmp_path, out=tmp_path / "first")
        result = controller.wait()
    assert result.status == "done"
    assert len(cache_events(controller)) == 1


def test_a_cache_locked_by_another_process_is_reported_once(tmp_path, monkeypatch):
    monkeypatch.setattr(response_cache, "_BUSY_TIMEOUT_MS", 20)
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    reported: list[str] = []
    cache.report_to(reported.append)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process writing for longer than the cache waits
    cache.put("k1", {"content": "x", "usage": None, "reasoning": None})
    cache.put("k2", {"content": "y", "usage": None, "reasoning": None})
    cache.close()
    other.execute("ROLLBACK")
    assert reported == ["database is locked"]
    assert not cache.usable and cache.get("k1") is None


def test_schema_columns_are_cached_as_parsed_json(tmp_path):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url)
        cfg["columns"][1]["output_schema"] = schema
        run(tmp_path, cfg, "first")
        n = len(requests_sent(url))
        run(tmp_path, cfg, "second")
        assert len(requests_sent(url)) == n
    pd.testing.assert_frame_equal(output(tmp_path, "first"), output(tmp_path, "second"))


def test_failed_answers_are_not_stored(tmp_path):
    sim = SimulatorThread(SimConfig(fail_rate=1.0, seed=1))
    with sim as url:
        cfg = pipeline(tmp_path, url)
        cfg["run"]["retries"] = 0
        cfg["run"]["early_stop"] = None
        result = run(tmp_path, cfg, "first")
    assert result.status == "failed"
    with sqlite3.connect(default_cache_path()) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone() == (0,)


def test_the_key_covers_the_endpoint_and_the_body_and_never_the_key():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    assert request_key("http://a/v1", body) == request_key("http://a/v1", dict(reversed(body.items())))
    assert request_key("http://a/v1", body) != request_key("http://b/v1", body)
    assert request_key("http://a/v1", body) != request_key("http://a/v1", {**body, "temperature": 1})


def test_size_cap_evicts_the_least_recently_used(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResponseCache(path)
    for i in range(20):
        cache.put(f"k{i}", {"content": "x" * 100, "usage": None, "reasoning": None})
    cache.close()
    cache = ResponseCache(path)
    assert all(cache.get(f"k{i}") is not None for i in range(5))  # used again: the most recent
    cache.close()
    ResponseCache(path, max_mb=1000 / 1024 / 1024).close()  # room for about 7 answers
    with sqlite3.connect(path) as db:
        kept = {key for (key,) in db.execute("SELECT key FROM responses")}
    assert {f"k{i}" for i in range(5)} <= kept
    assert 5 <= len(kept) < 10


FILL = """
import sys
from pathlib import Path
from treadle.engine import response_cache
from treadle.engine.response_cache import ResponseCache
cache = ResponseCache(Path(sys.argv[1]))
for i in range(500):
    cache.put(f"{sys.argv[2]}-{i}", {"content": str(i), "usage": None, "reasoning": None})
cache.close()
"""


def test_two_processes_fill_one_cache_at_once_without_losing_writes(tmp_path):
    path = tmp_path / "shared.sqlite"
    ResponseCache(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", FILL, str(path), name]) for name in ("p", "q")]
    assert [p.wait(60) for p in procs] == [0, 0]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone() == (1000,)


def test_two_runs_at_once_share_the_cache(tmp_path):
    with SimulatorThread(SimConfig(latency_ms=5)) as url:
        cfg = pipeline(tmp_path, url)
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "treadle.cli", "run", str(tmp_path / "p.yaml"), "--no-ui", "--out"]
        procs = [subprocess.Popen([*cmd, str(tmp_path / name)]) for name in ("one", "two")]
        assert [p.wait(120) for p in procs] == [0, 0]
        n = len(requests_sent(url))
        run(tmp_path, cfg, "three")
        assert len(requests_sent(url)) == n


def test_hits_are_marked_in_snapshots_and_traced_as_cached(tmp_path):
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url)
        run(tmp_path, cfg, "first")
        controller = treadle.start(cfg, base_dir=tmp_path, out=tmp_path / "second")
        controller.wait()
        snapshot = controller.snapshot(rows=range(ROWS))
        _, traces = controller.traces()
    assert snapshot.cache == {"hits": 2 * ROWS, "misses": 0}
    assert all(states == ("cached", "cached") for states in snapshot.window.values())
    assert {t.status for t in traces} == {"cached"}
    assert all(t.tokens_in is None for t in traces)  # a hit spends no tokens


def test_ctx_llm_calls_are_cached_too(tmp_path):
    (tmp_path / "ctx_cols.py").write_text("def ask(row, ctx):\n    return ctx.llm('Say something about ' + row['q'])\n")
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url)
        cfg["columns"] = [{"name": "said", "kind": "python", "function": "ctx_cols:ask"}]
        run(tmp_path, cfg, "first")
        n = len(requests_sent(url))
        run(tmp_path, cfg, "second")
        assert len(requests_sent(url)) == n
    pd.testing.assert_frame_equal(output(tmp_path, "first"), output(tmp_path, "second"))


def test_run_cache_naming_a_directory_is_a_config_problem(tmp_path):
    (tmp_path / "somedir").mkdir()
    cfg = pipeline(tmp_path, "http://127.0.0.1:9/v1")
    cfg["run"]["cache"] = "somedir"
    with pytest.raises(ConfigError, match=r"run.cache.*names a directory"):
        treadle.load(cfg, tmp_path)


def test_cache_settings_leave_the_pipeline_hash_alone(tmp_path):
    cfg = pipeline(tmp_path, "http://127.0.0.1:9/v1")
    changed = pipeline(tmp_path, "http://127.0.0.1:9/v1", cache=False)
    changed["columns"][0]["cache"] = True
    changed["run"]["cache_max_mb"] = 10
    assert treadle.load(cfg, tmp_path).source_hash == treadle.load(changed, tmp_path).source_hash


def test_answers_cut_off_at_max_tokens_are_not_stored(tmp_path):
    with SimulatorThread() as url:
        cfg = pipeline(tmp_path, url, max_tokens=2)  # the simulator cuts its answers: finish_reason "length"
        first = run(tmp_path, cfg, "first")
        sent = len(requests_sent(url))
        run(tmp_path, cfg, "second")
        assert len(requests_sent(url)) == 2 * sent
    assert first.status == "done" and sent == 2 * ROWS
    assert summary(tmp_path, "first")["cache"]["stored"] == 0


def test_keys_made_around_the_messages_are_the_request_keys():
    bodies = [
        {"model": "m", "temperature": 0.7},
        {"model": "m", "max_tokens": 5, "response_format": {"json_schema": {"schema": {"b": 1, "a": [1]}}}, "x": "é"},
    ]
    for body in bodies:
        keys = RequestKeys.of("http://a/v1", body)
        for prompt, system in (('ünï "quoted" \\ \n \x00 \u2028', None), ("p", "system é")):
            messages = chat_messages(prompt, system)
            assert keys.chat(prompt, system) == request_key("http://a/v1", {**body, "messages": messages})
            assert keys.messages(messages) == request_key("http://a/v1", {**body, "messages": messages})
        named = [{"role": "user", "content": "x", "name": "n"}]
        assert keys.messages(named) == request_key("http://a/v1", {**body, "messages": named})


class CountingTemplate:
    def __init__(self, template) -> None:
        self.template = template
        self.renders = 0

    def render(self, row):
        self.renders += 1
        return self.template.render(row)


async def test_a_miss_renders_and_hashes_its_prompt_once(tmp_path):
    with SimulatorThread() as url:
        loaded = treadle.load(pipeline(tmp_path, url), tmp_path)
        generator = build_generators(loaded)[1]
        assert isinstance(generator, LLMGenerator)
        generator.cache = cache = ResponseCache(tmp_path / "c.sqlite")
        await generator.astart()
        generator.prompt = counting = CountingTemplate(generator.prompt)
        row = {"q": "question 1", "a": "an answer"}
        lookup = generator.cache_lookup(row)
        assert lookup is not None and cache.get(lookup[1]) is None
        generator.missed(row, *lookup)
        values = await generator.agenerate(MappingProxyType(dict(row)))  # a view of the same values
        assert counting.renders == 1
        generator.missed(row, *lookup)
        equal = {"q": "question 1", "a": "an answer".upper().lower()}  # equal values, not the same objects
        await generator.agenerate(MappingProxyType(equal))
        assert counting.renders == 2  # rendered again: only the very same inputs are known to render the same
        await generator.aclose()
    cache.close()
    assert ResponseCache(tmp_path / "c.sqlite").get(lookup[1])["content"] == values["b"]


def test_an_edited_llm_column_is_looked_up_with_its_new_prompt_and_stamped(tmp_path):
    """Rows whose first column failed run the second after it is edited: the cache has the new prompt's
    answers (from another run), so they are hits, stamped with the edit's version."""
    (tmp_path / "flaky_cols.py").write_text(
        "from pathlib import Path\n\n"
        "def double(row):\n"
        "    if row['id'] % 2 and (Path(__file__).parent / 'broken').exists():\n"
        "        raise ValueError('odd row')\n"
        "    return row['id'] * 2\n"
    )
    pd.DataFrame({"id": range(4)}).to_csv(tmp_path / "seed.csv", index=False)
    with SimulatorThread() as url:
        cfg = {
            "seed": {"path": "seed.csv"},
            "models": {"m": {"model": "sim-model", "base_url": url, "max_parallel": 4}},
            "columns": [
                {"name": "a", "kind": "python", "function": "flaky_cols:double"},
                {"name": "l", "kind": "llm", "model": "m", "prompt": "Say {{ a }}"},
            ],
            "run": {"row_group_size": 4, "retries": 0, "backoff_s": 0, "early_stop": None},
        }
        edited = {**cfg, "columns": [cfg["columns"][0], {**cfg["columns"][1], "prompt": "Shout {{ a }}"}]}
        run(tmp_path, edited, "shouted")  # the new prompt's answers, cached
        sent = len(requests_sent(url))
        (tmp_path / "broken").touch()
        controller = treadle.RunController(
            treadle.load(cfg, tmp_path), RunOptions(out=tmp_path / "run", hold_open=True)
        )
        events = controller.subscribe()
        controller.start()
        while events.get(timeout=30).type != "idle":
            pass
        assert controller.update_column("l", prompt="Shout {{ a }}") == 2
        (tmp_path / "broken").unlink()
        controller.retry(columns=["a"])
        while events.get(timeout=30).type != "idle":
            pass
        assert len(requests_sent(url)) == sent + 2  # rows 0 and 2 said, before the edit
        controller.close()
        result = controller.wait(60)
    out = pd.read_parquet(result.output_path)
    assert out["l"].tolist()[1::2] == output(tmp_path, "shouted")["l"].tolist()[1::2]
    assert out["l__version"].tolist() == [1, 2, 1, 2]
    assert controller.snapshot().cache["hits"] == 2
