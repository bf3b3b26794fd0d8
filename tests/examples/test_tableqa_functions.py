"""The table-QA demo's python columns, its generated data and its simulator response book.

The files live in treadle/demo/tableqa/ (package data, not a package): the modules are loaded from their
files with importlib, as the pipeline loads them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import pandas as pd
import pytest
import yaml

from treadle.demo import DEMO_DIR

EXAMPLE = DEMO_DIR
GENERATED = ["questions.jsonl", "labels.jsonl", "responses.yaml", "expected.json"]
MODES = ["forkserver", "spawn"]


def _load(name: str) -> Any:
    module_name = f"tableqa_example_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


tq = _load("tableqa")


def _jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EXAMPLE / name).read_text().splitlines()]


def _row(code: str, file_name: str = "sales.csv") -> dict[str, Any]:
    return {"file_name": file_name, "code": {"code": code}}


# ------------------------------------------------------------------------------------- describe_table


def test_describe_table_reports_columns_counts_and_samples() -> None:
    info = json.loads(tq.describe_table({"file_name": "employees.csv"}))
    df = pd.read_csv(EXAMPLE / "tables" / "employees.csv")
    assert info["table"] == "tables/employees.csv"
    assert info["rows"] == len(df)
    assert [c["name"] for c in info["columns"]] == list(df.columns)
    by_name = {c["name"]: c for c in info["columns"]}
    assert by_name["salary"]["dtype"] == "int64"
    assert by_name["remote"]["dtype"] == "bool"
    assert by_name["rating"]["non_null"] == int(df["rating"].notna().sum()) < len(df)
    assert len(info["sample_rows"]) == 3
    assert info["sample_rows"][0]["name"] == df["name"][0]


def test_describe_table_of_the_empty_table_fails_with_one_line() -> None:
    assert (EXAMPLE / "tables" / "empty.csv").stat().st_size == 0
    with pytest.raises(ValueError, match=r"^tables/empty\.csv is empty: no columns to read$"):
        tq.describe_table({"file_name": "empty.csv"})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"file_name": "nope.csv"}, r"^tables/nope\.csv does not exist$"),
        ({"file_name": "../pipeline.yaml"}, r"points outside tables/"),
        ({}, r"^the row has no file_name$"),
    ],
)
def test_describe_table_rejects_bad_file_names(row: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tq.describe_table(row)


# ------------------------------------------------------------------------------------------- run_code


@pytest.mark.parametrize("mode", MODES)
async def test_run_code_returns_the_result(mode: str) -> None:
    df = pd.read_csv(EXAMPLE / "tables" / "sales.csv")
    got = await tq.run_code(_row("result = int((df['region'] == 'North').sum())"), execution=mode)
    assert got == int((df["region"] == "North").sum())


async def test_run_code_converts_numpy_and_pandas_values_to_json() -> None:
    code = """
print("prints of the code do not disturb the result")
result = {
    "int": np.int64(3), "float": np.float64(1.5), "bool": np.bool_(True), "nan": float("nan"),
    "series": df["units"].head(3), "index": df.columns[:2], "array": np.arange(3),
    "frame": df[["order_id", "units"]].head(2), "set": {"b", "a"},
}
"""
    df = pd.read_csv(EXAMPLE / "tables" / "sales.csv")
    got = await tq.run_code(_row(code))
    assert got == {
        "int": 3,
        "float": 1.5,
        "bool": True,
        "nan": None,
        "series": df["units"].head(3).tolist(),
        "index": list(df.columns[:2]),
        "array": [0, 1, 2],
        "frame": df[["order_id", "units"]].head(2).to_dict(orient="records"),
        "set": ["a", "b"],
    }


@pytest.mark.parametrize(
    "code_cell",
    [
        {"code": "result = len(df)"},
        json.dumps({"code": "result = len(df)"}),
        {"code": "```python\nresult = len(df)\n```"},
    ],
)
async def test_run_code_accepts_a_dict_a_json_string_and_a_fenced_block(code_cell: Any) -> None:
    assert await tq.run_code({"file_name": "cities.csv", "code": code_cell}) == 40


@pytest.mark.parametrize(
    ("code_cell", "message"),
    [
        ("result = len(df)", "must be JSON"),
        ({"script": "result = 1"}, "must be"),
        ({"code": "   "}, "holds no code"),
    ],
)
async def test_run_code_rejects_a_malformed_code_cell(code_cell: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await tq.run_code({"file_name": "cities.csv", "code": code_cell})


@pytest.mark.parametrize("mode", MODES)
async def test_run_code_reports_the_exception_of_the_code_in_one_line(mode: str) -> None:
    with pytest.raises(RuntimeError) as caught:
        await tq.run_code(_row("total = df['price'].sum()\nresult = total"), execution=mode)
    assert str(caught.value) == "generated code failed: KeyError: 'price'"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("answer = 1", "generated code failed: the code did not assign `result`"),
        ("result = (", "generated code failed: SyntaxError: '(' was never closed (<generated>, line 1)"),
        ("import sys\nsys.exit(3)", "generated code failed: SystemExit: 3"),
        ("import os\nos._exit(1)", "generated code crashed: the runner ended without a result"),
    ],
)
async def test_run_code_failures_of_other_kinds(code: str, message: str) -> None:
    with pytest.raises(RuntimeError) as caught:
        await tq.run_code(_row(code))
    assert str(caught.value) == message


async def test_run_code_on_the_empty_table_fails_like_describe_table() -> None:
    with pytest.raises(ValueError, match=r"^tables/empty\.csv is empty: no columns to read$"):
        await tq.run_code(_row("result = len(df)", "empty.csv"))


@pytest.mark.parametrize("mode", MODES)
async def test_run_code_kills_code_that_runs_past_the_timeout(mode: str) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError) as caught:
        await tq.run_code(_row("while True:\n    pass"), timeout_s=1.5, execution=mode)
    assert str(caught.value) == "generated code timed out after 1.5 s"
    assert time.monotonic() - started < 5
    assert await tq.run_code(_row("result = 1"), execution=mode) == 1  # the runner still works


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "code",
    ["block = bytearray(4 * 1024**3)\nresult = 1", "big = np.ones(1 << 31)\nresult = float(big.sum())"],
)
async def test_run_code_fails_code_that_allocates_too_much_memory(mode: str, code: str) -> None:
    with pytest.raises(RuntimeError, match=r"^generated code failed: MemoryError.*\(memory limit 1024 MiB\)$"):
        await tq.run_code(_row(code), execution=mode)
    assert await tq.run_code(_row("result = 2"), execution=mode) == 2  # and this process is fine


async def test_run_code_runs_many_calls_concurrently() -> None:
    rows = [_row(f"result = {i} + len(df)") for i in range(40)]
    assert await asyncio.gather(*(tq.run_code(row) for row in rows)) == [150 + i for i in range(40)]


# --------------------------------------------------------------------------------------- check_answer


@pytest.mark.parametrize(
    ("result", "answer", "kind", "expected"),
    [
        (42, "42", "number", True),
        (42.0, 42, "number", True),
        (42.00000001, "42", "number", True),
        (1e-12, "0", "number", True),
        (3.14159, "3.14", "number", True),
        (3.146, "3.14", "number", False),
        (41, "42", "number", False),
        ("42", "42", "number", True),
        ("1,234.5", "1234.5", "number", True),
        ([42], "42", "number", True),
        (None, "42", "number", False),
        (True, "1", "number", False),
        (float("nan"), "1", "number", False),
        ("  north ", "North", "string", True),
        ("New   York", "new york", "string", True),
        (["North"], "North", "string", True),
        ("South", "North", "string", False),
        (None, "North", "string", False),
        (True, "true", "boolean", True),
        ("yes", "true", "boolean", True),
        (1, "true", "boolean", True),
        ("No", "false", "boolean", True),
        (False, "true", "boolean", False),
        ("maybe", "false", "boolean", False),
        (None, "false", "boolean", False),
        (["b", "a"], '["a", "b"]', "list", True),
        (["A ", "b"], ["a", "b"], "list", True),
        (["a"], '["a", "b"]', "list", False),
        (["a", "b", "c"], '["a", "b"]', "list", False),
        ([2.0, 1], "[1, 2]", "list", True),
        ("a", '["a"]', "list", True),
        ('["b", "a"]', '["a", "b"]', "list", True),
        (None, '["a"]', "list", False),
    ],
)
def test_check_answer(result: Any, answer: Any, kind: str, expected: bool) -> None:
    assert tq.check_answer({"result": result, "answer": answer, "type": kind}) is expected


def test_check_answer_rejects_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown answer type 'date'"):
        tq.check_answer({"result": 1, "answer": "1", "type": "date"})


# ------------------------------------------------------------------------------------------ the data


def test_make_data_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    made = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    expected = sorted(GENERATED + [f"tables/{p.name}" for p in (EXAMPLE / "tables").iterdir()])
    assert made == expected
    for name in made:
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name


def test_the_data_has_the_promised_shape() -> None:
    questions, labels = _jsonl("questions.jsonl"), _jsonl("labels.jsonl")
    expected = json.loads((EXAMPLE / "expected.json").read_text())
    tables = {p.name: p for p in (EXAMPLE / "tables").glob("*.csv")}
    assert len(tables) == 11 and tables["empty.csv"].stat().st_size == 0
    for name, path in tables.items():
        if name != "empty.csv":
            assert 20 <= len(pd.read_csv(path)) <= 200, name
    assert len({q["id"] for q in questions}) == len({q["question"] for q in questions}) == len(questions) == 200
    assert all(q["file_name"] in tables for q in questions)
    assert sum(q["file_name"] == "empty.csv" for q in questions) == expected["counts"]["empty_table"] > 0
    assert {label["type"] for label in labels} == {"number", "string", "boolean", "list"}
    assert all(isinstance(label["answer"], str) for label in labels)  # one type in the column
    question_ids, label_ids = {q["id"] for q in questions}, {label["id"] for label in labels}
    assert sorted(question_ids - label_ids) == expected["questions_without_labels"] != []
    assert sorted(label_ids - question_ids) == expected["labels_without_questions"] != []
    assert len(question_ids & label_ids) == expected["joined_rows"] == sum(expected["counts"].values())
    assert sorted(expected["outcomes"]) == sorted(question_ids & label_ids)


def test_the_pipeline_loads_with_its_seed_join_and_functions() -> None:
    """treadle's own loader: ${VAR} expansion, the seed join, the column graph and `tableqa:` functions."""
    from treadle.engine.pipeline_loading import load_pipeline

    expected = json.loads((EXAMPLE / "expected.json").read_text())
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-test"}
    loaded = load_pipeline(EXAMPLE / "pipeline.yaml", env=env)
    assert [c.name for c in loaded.config.columns] == ["table_schema", "plan", "code", "result", "correct"]
    assert len(loaded.seed) == expected["joined_rows"]
    join = loaded.seed.join
    assert join is not None and join.renamed == ()
    assert (join.left_only, join.right_only) == (
        len(expected["questions_without_labels"]),
        len(expected["labels_without_questions"]),
    )


# ------------------------------------------------------------------------- the book against the prompts


class Book:
    """The response book as the brief defines it: the first rule whose regex matches the last user
    message (re.S) wins; its reply is a Jinja2 template rendered with the regex's named groups."""

    def __init__(self, path: Path) -> None:
        self.rules = yaml.safe_load(path.read_text())["rules"]
        self.patterns = [re.compile(rule["match"], re.S) for rule in self.rules]
        self.env = jinja2.sandbox.SandboxedEnvironment()

    def answer(self, message: str) -> tuple[int, str, str | None]:
        for index, (rule, pattern) in enumerate(zip(self.rules, self.patterns, strict=True)):
            match = pattern.search(message)
            if match:
                groups = match.groupdict()
                reasoning = rule.get("reasoning")
                reply = self.env.from_string(rule["reply"]).render(**groups)
                return index, reply, self.env.from_string(reasoning).render(**groups) if reasoning else None
        raise AssertionError(f"no rule matches: {message[:200]!r}")


@pytest.fixture(scope="module")
def book() -> Book:
    return Book(EXAMPLE / "responses.yaml")


@pytest.fixture(scope="module")
def columns() -> dict[str, Any]:
    config = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    return {column["name"]: column for column in config["columns"] if column["kind"] == "llm"}


def _render(template: str, row: dict[str, Any]) -> str:
    """A prompt as the engine renders it."""
    from treadle.engine.templates import compile_template

    return compile_template(template).render(**row)


def _messages(question: dict[str, Any], book: Book, columns: dict[str, Any]) -> tuple[str, str]:
    """The planner's and the coder's user messages for one question, the plan coming from the book."""
    row = {**question, "table_schema": tq.describe_table(question)}
    plan_prompt = _render(columns["plan"]["prompt"], row)
    _index, plan_reply, reasoning = book.answer(plan_prompt)
    plan = json.loads(plan_reply)
    assert isinstance(plan["steps"], list) and question["question"] in plan["steps"][1]
    assert reasoning is not None and question["question"] in reasoning
    return plan_prompt, _render(columns["code"]["prompt"], {**row, "plan": plan})


def _code_for(question: dict[str, Any], book: Book, columns: dict[str, Any]) -> str:
    """What the book answers the coder with for one question; it must be the question's own rule."""
    _plan_prompt, code_prompt = _messages(question, book, columns)
    index, code_reply, _ = book.answer(code_prompt)
    assert re.escape(question["question"]) in book.rules[index]["match"], "the question's own rule answers"
    return json.loads(code_reply)["code"]


def test_every_question_reaches_its_own_rule(book: Book, columns: dict[str, Any]) -> None:
    for question in _jsonl("questions.jsonl"):
        if question["file_name"] != "empty.csv":
            _code_for(question, book, columns)


def test_the_simulator_reads_the_book_the_same_way(book: Book, columns: dict[str, Any]) -> None:
    from treadle.sim.book import load_book

    sim_book = load_book(EXAMPLE / "responses.yaml")
    for question in _jsonl("questions.jsonl")[::7]:
        if question["file_name"] == "empty.csv":
            continue
        for message in _messages(question, book, columns):
            ours = book.answer(message)
            theirs = sim_book.answer(message, "gpt-4o-mini")
            assert theirs is not None and (theirs.reply, theirs.reasoning) == (ours[1], ours[2])


async def test_the_book_gives_exactly_the_expected_outcomes(book: Book, columns: dict[str, Any]) -> None:
    """Every joined row, as the pipeline runs it: describe_table, plan, code, run_code, check_answer."""
    expected = json.loads((EXAMPLE / "expected.json").read_text())
    labels = {label["id"]: label for label in _jsonl("labels.jsonl")}
    rows = [{**q, **labels[q["id"]]} for q in _jsonl("questions.jsonl") if q["id"] in labels]

    async def outcome(row: dict[str, Any]) -> str:
        try:
            code = _code_for(row, book, columns)
        except ValueError as exc:
            assert str(exc) == f"tables/{row['file_name']} is empty: no columns to read"
            return "empty_table"
        try:
            result = await tq.run_code({**row, "code": {"code": code}})
        except RuntimeError as exc:
            assert str(exc).startswith("generated code failed: ")
            return "broken"
        return "correct" if tq.check_answer({**row, "result": result}) else "wrong"

    got = dict(zip([r["id"] for r in rows], await asyncio.gather(*map(outcome, rows)), strict=True))
    assert got == expected["outcomes"]
    counts = {kind: sum(1 for o in got.values() if o == kind) for kind in expected["counts"]}
    assert counts == expected["counts"]


async def test_run_code_starts_a_new_runner_when_the_old_one_died() -> None:
    assert await tq.run_code(_row("result = 1")) == 1
    server = tq._SERVER._proc
    assert server is not None
    directory = tq._SERVER._dir
    server.terminate()  # the runner cleans up on SIGTERM
    await asyncio.to_thread(server.wait)
    assert not os.path.exists(directory)
    assert await tq.run_code(_row("result = 2")) == 2
    assert tq._SERVER._proc is not server
