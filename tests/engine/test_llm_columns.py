"""`kind: llm` columns end to end: real HTTP through ChatOpenAI's aiohttp client to the simulator.

The simulator serves from its own thread (SimulatorThread); the run happens on the engine thread.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

import treadle
from treadle.engine.errors import ConfigError
from treadle.engine.generators.llm import strict_ok
from treadle.engine.generators.llm_client import ModelClient, retry_after
from treadle.engine.pipeline import ModelConfig
from treadle.engine.schemas import instance_problem
from treadle.sim import SimConfig, SimulatorThread

ROOT = Path(__file__).resolve().parents[2]
KEY_VAR = "TREADLE_TEST_LLM_KEY"
WRONG_KEY = "sk-treadletestwrongkey0123456789"

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 1},
        "score": {"type": "integer", "minimum": 0, "maximum": 10},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    },
    "required": ["answer", "score", "tags"],
    "additionalProperties": False,
}


def config(tmp_path: Path, url: str, columns: list[dict], rows: int = 10, model: dict | None = None, **run) -> dict:
    pd.DataFrame({"q": [f"question {i}" for i in range(rows)]}).to_csv(tmp_path / "seed.csv", index=False)
    return {
        "seed": {"path": "seed.csv"},
        "models": {"m": {"model": "sim-model", "base_url": url, "max_parallel": 8, **(model or {})}},
        "columns": columns,
        "run": {"row_group_size": 25, "max_parallel": 16, "backoff_s": 0, **run},
    }


def llm(name: str = "a", prompt: str = "Answer {{ q }}", **extra) -> dict:
    return {"name": name, "kind": "llm", "model": "m", "prompt": prompt, **extra}


def run(tmp_path: Path, cfg: dict) -> treadle.RunResult:
    return treadle.run(cfg, base_dir=tmp_path, out=tmp_path / "run")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def plain(value):
    """A value read back from parquet with numpy arrays turned into lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def files_text(directory: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in directory.rglob("*") if p.is_file())


# ---- outputs -------------------------------------------------------------------------------------


def test_text_output_with_usage_and_no_reasoning(tmp_path):
    with SimulatorThread() as url:
        result = run(tmp_path, config(tmp_path, url, [llm()], rows=20))
    assert result.status == "done"
    out = result.output
    assert out["a"].tolist() == [f"Simulated answer to: Answer question {i}" for i in range(20)]
    for usage in out["a__usage"]:
        assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "a__reasoning" not in out.columns


def test_structured_output_is_a_validated_dict(tmp_path):
    with SimulatorThread() as url:
        cfg = config(tmp_path, url, [llm(output_schema=SCHEMA, system="Reply in JSON about {{ q }}.")])
        result = run(tmp_path, cfg)
    assert result.status == "done"
    for value in result.output["a"]:
        assert isinstance(value, dict)
        assert instance_problem(SCHEMA, plain(value)) is None


def test_cells_are_right_after_retried_faults(tmp_path):
    sim = SimulatorThread(SimConfig(fail_rate=0.2, seed=3))
    with sim as url:
        cfg = config(tmp_path, url, [llm(), llm("b", "Rate {{ a }}", output_schema=SCHEMA)], rows=10, retries=8)
        result = run(tmp_path, cfg)
        stats = sim.stats()
    assert result.status == "done"
    assert stats["faults"]["fail"] > 0
    out = result.output
    assert out["a"].tolist() == [f"Simulated answer to: Answer question {i}" for i in range(10)]
    assert all(instance_problem(SCHEMA, plain(v)) is None for v in out["b"])
    assert all(u["total_tokens"] > 0 for u in out["b__usage"])


def test_reasoning_column_when_the_endpoint_reasons(tmp_path):
    with SimulatorThread(SimConfig(reasoning=True)) as url:
        result = run(tmp_path, config(tmp_path, url, [llm()], rows=5))
    assert result.status == "done"
    assert result.output["a__reasoning"].tolist() == [
        f"Simulated reasoning about: Answer question {i}" for i in range(5)
    ]


def test_response_book_rule_and_a_structured_value_rendered_as_json(tmp_path):
    book = tmp_path / "book.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {
                        "match": r"capital of (?P<country>\w+)",
                        "reply": '{"city": "{{ country }}ville"}',
                        "reasoning": "I know {{ country }}.",
                    },
                    {"match": r"^Echo (?P<payload>.*)$", "reply": "{{ payload }}"},
                ]
            }
        )
    )
    pd.DataFrame({"country": ["France", "Peru", "Chad"]}).to_csv(tmp_path / "countries.csv", index=False)
    city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    with SimulatorThread(SimConfig(book=str(book))) as url:
        cfg = config(
            tmp_path,
            url,
            [
                llm("capital", "What is the capital of {{ country }}?", output_schema=city),
                llm("echo", "Echo {{ capital }}"),
            ],
        )
        cfg["seed"] = {"path": "countries.csv"}
        result = run(tmp_path, cfg)
    assert result.status == "done"
    out = result.output
    assert out["capital"].tolist() == [{"city": "Franceville"}, {"city": "Peruville"}, {"city": "Chadville"}]
    assert out["capital__reasoning"].tolist() == ["I know France.", "I know Peru.", "I know Chad."]
    # The dict from the structured column reaches the next prompt as JSON, not as Python's repr.
    assert out["echo"].tolist() == ['{"city": "Franceville"}', '{"city": "Peruville"}', '{"city": "Chadville"}']


def test_invalid_or_mismatched_json_is_retried_then_fails_with_the_reason(tmp_path):
    book = tmp_path / "book.yaml"
    book.write_text(
        yaml.safe_dump({"rules": [{"match": "question 0", "reply": "not json"}, {"match": ".", "reply": '{"x": "a"}'}]})
    )
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    with SimulatorThread(SimConfig(book=str(book))) as url:
        result = run(tmp_path, config(tmp_path, url, [llm(output_schema=schema)], rows=2, retries=1))
    assert result.status == "failed"
    by_row = {f["row"]: f for f in result.failures}
    assert by_row[0]["message"].startswith("output is not valid JSON: ")
    assert by_row[1]["message"] == "output does not match output_schema: at x: 'a' is not of type 'integer'"
    assert {f["attempts"] for f in result.failures} == {2}
    assert {f["error_class"] for f in result.failures} == {"RetryableCellError"}


def test_a_prompt_that_fails_to_render_fails_its_cell_without_a_request(tmp_path):
    with SimulatorThread() as url:
        result = run(tmp_path, config(tmp_path, url, [llm(prompt="{{ q.nothing.here }}")], rows=2, retries=3))
    assert result.status == "failed"
    assert [(f["error_class"], f["attempts"]) for f in result.failures] == [("CellError", 1)] * 2
    assert result.failures[0]["message"].startswith("prompt template: ")


# ---- retries -------------------------------------------------------------------------------------


def test_faults_are_retried_until_every_row_is_done(tmp_path):
    sim = SimulatorThread(SimConfig(fail_rate=0.2, malformed_rate=0.15, drop_rate=0.1, seed=7))
    with sim as url:
        result = run(tmp_path, config(tmp_path, url, [llm(), llm("b", "Again {{ a }}")], rows=40, retries=8))
        stats = sim.stats()
    assert result.status == "done", result.failures[:3]
    assert result.output["b"].notna().all()
    assert stats["requests_total"] > 80
    assert stats["faults"]["fail"] > 0 and stats["faults"]["malformed"] > 0 and stats["faults"]["drop"] > 0
    assert stats["by_status"]["200"] == 80 + stats["faults"]["malformed"]


def test_rate_limit_answers_are_retried_after_retry_after(tmp_path):
    # 60 requests a minute: a burst of 60 passes, then one request a second. With no backoff of its
    # own and few retries, a cell only succeeds if it waits as long as Retry-After says.
    sim = SimulatorThread(SimConfig(rpm=60))
    with sim as url:
        # Not adaptive: each cell waits out its own 429 (an adaptive model would pace to the headers).
        cfg = config(tmp_path, url, [llm()], rows=61, retries=3, row_group_size=100, model={"adaptive": False})
        result = run(tmp_path, cfg)
        stats = sim.stats()
    assert result.status == "done", result.failures
    assert 1 <= stats["by_status"]["429"] <= 3
    assert stats["by_status"]["200"] == 61


def test_a_bad_request_fails_the_cell_at_once_with_the_endpoints_message(tmp_path):
    sim = SimulatorThread()
    with sim as url:
        result = run(tmp_path, config(tmp_path, url, [llm()], rows=3, model={"extra_body": {"n": 1000}}))
        stats = sim.stats()
    assert result.status == "failed"
    assert result.message is None
    assert {(f["error_class"], f["attempts"], f["message"]) for f in result.failures} == {
        ("CellError", 1, "the endpoint rejected the request (400): n must be an integer between 1 and 128")
    }
    assert stats["requests_total"] == 3


def test_a_hung_request_times_out_at_the_models_timeout(tmp_path):
    with SimulatorThread(SimConfig(hang_rate=1.0)) as url:
        result = run(tmp_path, config(tmp_path, url, [llm()], rows=2, retries=1, model={"timeout_s": 0.3}))
    assert result.status == "failed"
    # The client's timeout and the engine's per-attempt deadline are both 0.3 s: either may say so first.
    assert {(f["message"].removeprefix("the request "), f["attempts"]) for f in result.failures} == {
        ("timed out after 0.3 s", 2)
    }


def test_requests_in_flight_never_exceed_the_models_max_parallel(tmp_path):
    sim = SimulatorThread(SimConfig(latency_ms=20))
    with sim as url:
        cfg = config(tmp_path, url, [llm(), llm("b", "More {{ a }}")], rows=40, model={"max_parallel": 5})
        result = run(tmp_path, cfg)
        stats = sim.stats()
    assert result.status == "done"
    assert stats["max_in_flight"] == 5
    assert result.summary["limits"]["model:m"]["peak"] == 5


def test_no_unclosed_session_warnings(tmp_path, caplog):
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
        warnings.simplefilter("always")
        with SimulatorThread() as url:
            assert run(tmp_path, config(tmp_path, url, [llm()], rows=5)).status == "done"
        gc.collect()
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if "nclosed" in t], texts


# ---- fatal errors stop the run early --------------------------------------------------------------


def test_a_refused_key_stops_the_run_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VAR, WRONG_KEY)
    sim = SimulatorThread(SimConfig(api_key="the-right-key"))
    with sim as url:
        cfg = config(tmp_path, url, [llm()], rows=100, model={"api_key_env": KEY_VAR, "max_parallel": 4})
        result = run(tmp_path, cfg)
        stats = sim.stats()
    assert result.status == "failed"
    assert result.message == f"model 'm' at {url}: the endpoint refused the API key from {KEY_VAR} (401)"
    assert stats["requests_total"] <= 8
    assert WRONG_KEY not in files_text(result.run_dir)


def test_an_unknown_model_stops_the_run_with_one_message(tmp_path):
    sim = SimulatorThread(SimConfig(models=["a"]))
    with sim as url:
        cfg = config(tmp_path, url, [llm()], rows=100, model={"model": "gpt-x", "max_parallel": 4})
        result = run(tmp_path, cfg)
        stats = sim.stats()
    assert result.status == "failed"
    assert result.message == f"model 'm' at {url}: the endpoint does not know model 'gpt-x' (404)"
    assert stats["requests_total"] <= 8


def test_an_unreachable_endpoint_stops_the_run_early(tmp_path):
    url = closed_port_url()
    result = run(tmp_path, config(tmp_path, url, [llm()], rows=100, model={"max_parallel": 4}))
    assert result.status == "failed"
    assert result.message == f"cannot reach {url} for model 'm': connection refused"
    assert len(result.failures) < 10
    assert result.summary["rows"]["unfinished"] > 80


def test_a_refused_connection_alone_fails_its_cell_after_retries(tmp_path):
    url = closed_port_url()
    result = run(tmp_path, config(tmp_path, url, [llm()], rows=1, retries=2, salvage_rounds=0))
    assert result.status == "failed"
    assert result.message is None
    assert [(f["message"], f["attempts"]) for f in result.failures] == [
        (f"cannot connect to {url}: connection refused", 3)
    ]


# ---- the API key ---------------------------------------------------------------------------------


def test_a_missing_key_for_a_remote_endpoint_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    cfg = config(tmp_path, "https://llm.example.com/v1", [llm()], model={"api_key_env": KEY_VAR})
    with pytest.raises(ConfigError) as caught:
        run(tmp_path, cfg)
    assert str(caught.value) == (
        f"PipelineConfig: models.m.api_key_env: environment variable {KEY_VAR} is not set "
        "(put it in the environment or in .env beside the pipeline)"
    )


def test_the_key_is_read_from_dotenv_beside_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_VAR, raising=False)
    (tmp_path / ".env").write_text(f"{KEY_VAR}=sk-from-dotenv-file-1234\n")
    with SimulatorThread(SimConfig(api_key="sk-from-dotenv-file-1234")) as url:
        result = run(tmp_path, config(tmp_path, url, [llm()], rows=3, model={"api_key_env": KEY_VAR}))
    assert result.status == "done"
    assert KEY_VAR not in os.environ


def test_messages_never_carry_the_key():
    client = ModelClient(
        name="m",
        config=ModelConfig(model="x"),
        base_url="http://127.0.0.1:1/v1",
        api_key="my-secret-value",
        api_key_env=KEY_VAR,
        timeout_s=1,
    )
    text = client.redact("Incorrect API key provided: sk-abcdef123456789, also my-secret-value")
    assert text == "Incorrect API key provided: sk-***, also ***"
    assert "my-secret-value" not in repr(client)


def test_retry_after_headers():
    assert retry_after({"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({}) is None
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_containers_render_as_json_in_templates():
    import numpy as np

    from treadle.engine.templates import compile_template

    template = compile_template("{{ d }} {{ l }} {{ a }} {{ d.x }} {{ s }}")
    rendered = template.render(d={"x": 1, "y": "é"}, l=[1, "b"], a=np.array([1, 2]), s="text")
    assert rendered == '{"x": 1, "y": "é"} [1, "b"] [1, 2] 1 text'


def test_strict_only_where_the_schema_allows():
    assert strict_ok(SCHEMA)
    assert not strict_ok({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]})
    assert not strict_ok({**SCHEMA, "required": ["answer"]})
    assert not strict_ok({"type": "array", "items": {"type": "string"}})


# ---- the command line ----------------------------------------------------------------------------


def write_cli_pipeline(tmp_path: Path) -> Path:
    pd.DataFrame({"q": [f"question {i}" for i in range(30)]}).to_csv(tmp_path / "seed.csv", index=False)
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(
        "seed: {path: seed.csv}\n"
        "models:\n"
        "  planner: {base_url: '${OPENAI_BASE_URL}', model: sim-model, api_key_env: OPENAI_API_KEY, max_parallel: 4}\n"
        "columns:\n"
        "  - {name: answer, kind: llm, model: planner, prompt: 'Answer {{ q }}'}\n"
        "run: {backoff_s: 0}\n"
    )
    return pipeline


def cli(pipeline: Path, out: Path, url: str, key: str) -> subprocess.CompletedProcess[str]:
    # COLUMNS: rich wraps lines at 80 columns when output is not a terminal.
    env = {**os.environ, "OPENAI_BASE_URL": url, "OPENAI_API_KEY": key, "NO_COLOR": "1", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "treadle.cli", "run", str(pipeline), "--no-ui", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_runs_an_llm_pipeline(tmp_path):
    pipeline = write_cli_pipeline(tmp_path)
    with SimulatorThread() as url:
        done = cli(pipeline, tmp_path / "run", url, "sk-anything-goes-here")
    assert done.returncode == 0, done.stdout + done.stderr
    out = pd.read_parquet(tmp_path / "run" / "output.parquet")
    assert out["answer"].tolist() == [f"Simulated answer to: Answer question {i}" for i in range(30)]


def test_cli_wrong_key_exits_1_with_one_clear_line_and_never_shows_the_key(tmp_path):
    pipeline = write_cli_pipeline(tmp_path)
    with SimulatorThread(SimConfig(api_key="the-right-key")) as url:
        done = cli(pipeline, tmp_path / "run", url, WRONG_KEY)
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    expected = f"model 'planner' at {url}: the endpoint refused the API key from OPENAI_API_KEY (401)"
    assert [line for line in text.splitlines() if "refused the API key" in line] == [expected]
    assert "Traceback" not in text
    assert WRONG_KEY not in text
    assert WRONG_KEY not in files_text(tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["message"] == expected
