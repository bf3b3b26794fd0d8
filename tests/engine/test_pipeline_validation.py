"""Validating pipeline files: each bad case is a real folder in tests/data/pipelines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from treadle.engine.errors import ConfigError
from treadle.engine.functions import FunctionLoadError, accepts_context, is_async_function, resolve_function
from treadle.engine.pipeline import LLMColumn, PipelineConfig, SeedConfig, TemplateColumn
from treadle.engine.pipeline_loading import load_pipeline
from treadle.engine.pipeline_validation import describe, load_pipeline_config
from treadle.engine.schemas import schema_problem

CASES = Path(__file__).parents[1] / "data" / "pipelines"


def problems(case: str, env: dict[str, str] | None = None) -> list[str]:
    """The problem lines loading a case folder's pipeline gives; each must be one line."""
    with pytest.raises(ConfigError) as info:
        load_pipeline(CASES / case / "pipeline.yaml", env=env or {})
    lines = [str(p) for p in info.value.problems]
    assert lines, "a ConfigError must carry at least one problem"
    assert str(info.value) == "\n".join(lines)
    for line in lines:
        assert "\n" not in line and "Traceback" not in line
    return lines


def only(case: str, env: dict[str, str] | None = None) -> str:
    lines = problems(case, env)
    assert len(lines) == 1, lines
    return lines[0]


# --- the good pipeline


def test_good_pipeline_loads_with_join_dotenv_and_graph():
    loaded = load_pipeline(CASES / "good" / "pipeline.yaml", env={})
    assert loaded.name == "good-run"
    assert loaded.path == (CASES / "good" / "pipeline.yaml").resolve()
    assert loaded.base_dir == (CASES / "good").resolve()
    planner = loaded.config.models["planner"]
    assert planner.base_url == "http://from-dotenv.invalid/v1"  # from .env
    assert planner.model == "from-dotenv"
    assert planner.api_key_env == "SIM_API_KEY"  # ${GOOD_KEY_ENV:-SIM_API_KEY}
    assert loaded.config.seed.join is not None and loaded.config.seed.join.on == "id"  # `on` stays a key
    assert len(loaded.seed.frame) == 3
    assert loaded.seed.join is not None and loaded.seed.join.renamed == (("text", "text_labels"),)
    assert loaded.graph.order == ("schema", "plan", "stats", "report", "code")
    assert re.fullmatch(r"[0-9a-f]{64}", loaded.source_hash)


def test_source_hash_is_stable_and_follows_the_resolved_config():
    one = load_pipeline(CASES / "good" / "pipeline.yaml", env={})
    two = load_pipeline(CASES / "good" / "pipeline.yaml", env={})
    other = load_pipeline(CASES / "good" / "pipeline.yaml", env={"GOOD_MODEL": "another"})
    assert one.source_hash == two.source_hash != other.source_hash


def test_unset_variables_and_schema_problems_are_reported_together(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(
        "seed: {path: '${TREADLE_TEST_DATA}/q.csv'}\ncolumns:\n  - {name: a, kind: tmpl}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(tmp_path / "pipeline.yaml", env={})
    assert [(p.file, p.key, p.column_index) for p in info.value.problems] == [
        ("pipeline.yaml", "seed.path", None),
        ("pipeline.yaml", "columns[0] 'a'.kind", 0),
    ]


# --- one test per validation case


def test_unknown_kind():
    assert only("unknown_kind") == (
        "pipeline.yaml: columns[1] 'x'.kind: unknown kind 'foo' (expected llm, python, template, filter)"
    )


def test_unknown_field_suggests_the_closest():
    lines = problems("unknown_field")
    assert "pipeline.yaml: seed.jion: unknown field 'jion' (did you mean 'join'?)" in lines
    assert "pipeline.yaml: columns[0] 'a'.templat: unknown field 'templat' (did you mean 'template'?)" in lines
    assert "pipeline.yaml: columns[0] 'a': missing required field 'template'" in lines


def test_duplicate_column_name_and_seed_field_collision():
    lines = problems("duplicate_column")
    assert lines == [
        "pipeline.yaml: columns[1] 'answer'.name: duplicate column name 'answer' (columns[0] has it too)",
        "pipeline.yaml: columns[2] 'question': output column 'question' is also a seed field; choose another name",
    ]


def test_unknown_reference_suggests_the_closest():
    assert problems("unknown_reference") == [
        "pipeline.yaml: columns[0] 'answer'.template: unknown column or seed field 'questoin' "
        "(did you mean 'question'?)",
        "pipeline.yaml: columns[1] 'final'.depends_on[0]: unknown column or seed field 'answr' "
        "(did you mean 'answer'?)",
    ]


def test_cycle_is_named_and_self_reference_reported():
    assert problems("cycle") == [
        "pipeline.yaml: columns[1] 'a': dependency cycle: a -> b -> c -> a (each column needs the next)",
        "pipeline.yaml: columns[5] 'me'.template: 'me' is this column's own output: a column cannot depend on itself",
    ]


def test_missing_seed_file():
    line = only("missing_seed")
    assert line.startswith("pipeline.yaml: seed.path: file 'data/nowhere.jsonl' not found (looked in ")


def test_empty_seed_file():
    assert only("empty_seed") == "empty.jsonl: file is empty"


def test_seed_with_only_a_header():
    assert only("header_only_seed") == "header.csv: has no rows (only a header line)"


def test_unreadable_seed_file():
    assert only("unreadable_seed") == "table.parquet: is not a parquet file (it looks like text)"


def test_binary_seed_file():
    assert only("binary_seed") == "image.jsonl: is a PNG image, not JSON text"


def test_non_utf8_seed_names_the_line():
    assert only("non_utf8") == "latin1.csv: line 3: not UTF-8 text (byte 0xe9); save the file as UTF-8"


def test_ragged_csv_names_the_line():
    assert only("ragged_csv") == "rows.csv: line 4: 3 fields where the header has 2 (an unquoted comma?)"


def test_join_key_absent_in_the_seed_file():
    assert only("join_key_absent_left") == (
        "pipeline.yaml: seed.join.on: join key 'qid' is not a column of seed.csv "
        "(its columns: id, question); did you mean 'id'?"
    )


def test_join_key_absent_in_the_join_file():
    assert only("join_key_absent_right") == (
        "pipeline.yaml: seed.join.on: join key 'id' is not a column of labels.jsonl "
        "(its columns: ID, label); did you mean 'ID'?"
    )


def test_duplicate_join_keys_name_file_key_and_values():
    assert only("duplicate_join_keys") == "labels.jsonl: join key 'id' is not unique: 1 (3 rows), 2 (2 rows)"


def test_function_not_importable():
    line = only("function_not_importable")
    assert line.startswith(
        "pipeline.yaml: columns[0] 'a'.function: no module named 'nosuchmodule_treadle' beside the pipeline"
    )
    assert line.endswith("or on the Python path")


def test_each_kind_of_bad_function_is_explained():
    lines = problems("bad_functions")
    expected = [
        "columns[0] 'spec'.function: 'no colon here' is not of the form module:function",
        "columns[1] 'raises'.function: importing module 'raises_on_import' raised KeyError "
        "at raises_on_import.py line 2: 'token'",
        "columns[2] 'missing'.function: module 'helpers_bad' has no attribute 'describ' (did you mean 'describe'?)",
        "columns[3] 'notcallable'.function: 'helpers_bad:CONSTANT' is an int, not a function",
        "columns[4] 'noargs'.function: 'helpers_bad:no_args' takes no positional argument",
        "columns[5] 'deps'.function: importing module 'needs_missing_dep' raised ModuleNotFoundError "
        "at needs_missing_dep.py line 1: No module named 'treadle_no_such_dependency'",
    ]
    assert len(lines) == len(expected)  # pkg.sub:ok, a package beside the pipeline, resolves
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(f"pipeline.yaml: {start}"), line


def test_template_syntax_errors_name_field_and_line():
    assert problems("template_syntax") == [
        "pipeline.yaml: columns[0] 'plan'.prompt: template syntax error at line 2: unexpected '}'",
        "pipeline.yaml: columns[0] 'plan'.system: template syntax error at line 1: No filter named 'no_such_filter'.",
        "pipeline.yaml: columns[1] 'ok'.template: template syntax error at line 1: "
        "Expected an expression, got 'end of statement block'",
    ]


def test_undefined_model():
    assert only("undefined_model") == (
        "pipeline.yaml: columns[0] 'plan'.model: undefined model 'planer' (models: planner; did you mean 'planner'?)"
    )


def test_unset_variable_names_the_key_path():
    line = only("unset_var")
    assert line.startswith(
        "pipeline.yaml: models.planner.base_url: environment variable TREADLE_TEST_UNSET_URL is not set"
    )
    loaded = load_pipeline(CASES / "unset_var" / "pipeline.yaml", env={"TREADLE_TEST_UNSET_URL": "http://x"})
    assert loaded.config.models["planner"].base_url == "http://x/v1"


def test_yaml_syntax_error_names_the_line():
    assert only("yaml_syntax") == (
        "pipeline.yaml: line 4: YAML syntax error: expected ',' or '}', but got '-' "
        "(while parsing a flow mapping started at line 3)"
    )


def test_duplicate_yaml_key():
    assert only("duplicate_yaml_key") == "pipeline.yaml: line 4: duplicate key 'columns'"


def test_invalid_output_schema():
    assert only("invalid_output_schema") == (
        "pipeline.yaml: columns[0] 'answer'.output_schema: invalid JSON schema at properties.answer.type: "
        "unknown type 'str' (expected one of object, array, string, number, integer, boolean, null); "
        "did you mean 'string'?"
    )


def test_python_columns_list_empty_or_duplicated():
    assert problems("python_columns_list") == [
        "pipeline.yaml: columns[0] 'none'.columns: is empty; list the output columns, or leave it out to "
        "write one column 'none'",
        "pipeline.yaml: columns[1] 'twice'.columns: lists 'x' more than once",
    ]


# --- all problems at once


def test_schema_problems_are_reported_together():
    assert problems("many_problems") == [
        "pipeline.yaml: models.planner.max_paralel: unknown field 'max_paralel' (did you mean 'max_parallel'?)",
        "pipeline.yaml: run.retries: should be greater than or equal to 0 (got a number -1)",
        "pipeline.yaml: columns[1] 'b'.kind: unknown kind 'tempalte' (expected llm, python, template, filter); "
        "did you mean 'template'?",
    ]


def test_reference_model_function_and_template_problems_are_reported_together():
    lines = problems("many_checks")
    assert [line.split(": ")[1] for line in lines] == [
        "columns[0] 'plan'.model",
        "columns[0] 'plan'.prompt",
        "columns[1] 'fn'.function",
        "columns[2] 't'.template",
    ]


def test_seed_problems_are_reported_with_schema_problems():
    lines = problems("bad_seed_and_column")
    assert len(lines) == 2
    assert lines[0].startswith("pipeline.yaml: seed.path: file 'missing.csv' not found")
    assert lines[1].startswith("pipeline.yaml: columns[0] 'a'.kind: unknown kind 'foo'")


BAD_CASES = sorted(p.name for p in CASES.iterdir() if (p / "pipeline.yaml").is_file() and p.name != "good")


@pytest.mark.parametrize("case", BAD_CASES)
def test_every_problem_is_one_line_starting_with_a_file_name(case):
    for line in problems(case):
        assert re.match(r"^[\w./-]+\.(yaml|csv|jsonl|json|parquet)(: line \d+)?: \S", line), line


# --- the Python API


def test_load_pipeline_config_checks_a_model_built_in_python():
    config = PipelineConfig(
        seed=SeedConfig(path="good/questions.jsonl"),
        columns=[
            TemplateColumn(name="t", kind="template", template="{{ question }}"),
            LLMColumn(name="l", kind="llm", model="m", prompt="{{ t }} {{ nope }}"),
        ],
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(config, CASES)
    assert [str(p) for p in info.value.problems] == [
        "PipelineConfig: columns[1] 'l'.model: undefined model 'm' (no models are defined under models:)",
        "PipelineConfig: columns[1] 'l'.prompt: unknown column or seed field 'nope' "
        "(known: id, question, table, text, t)",
    ]
    good = config.model_copy(update={"columns": config.columns[:1]})
    loaded = load_pipeline_config(good, CASES)
    assert loaded.path is None and loaded.name == "pipeline" and loaded.graph.order == ("t",)


def test_load_pipeline_config_accepts_a_mapping():
    with pytest.raises(ConfigError, match=r"^PipelineConfig: columns\[0\] 'x'\.kind: unknown kind 'nope'"):
        load_pipeline_config(
            {"seed": {"path": "good/questions.jsonl"}, "columns": [{"name": "x", "kind": "nope"}]}, CASES
        )
    loaded = load_pipeline_config(
        {
            "seed": {"path": "good/questions.jsonl"},
            "columns": [{"name": "x", "kind": "template", "template": "hi"}],
        },
        CASES,
    )
    assert len(loaded.seed.frame) == 4


def test_describe_lists_seed_join_and_columns_in_order():
    lines = describe(load_pipeline(CASES / "good" / "pipeline.yaml", env={}))
    assert lines[0] == "seed: questions.jsonl: 3 rows; fields: id, question, table, text, label, text_labels"
    assert lines[1] == (
        "join: labels.csv on 'id': 3 matched; 1 only in questions.jsonl (e.g. 'q4'); 1 only in labels.csv (e.g. 'q9')"
    )
    assert lines[2] == "join: 'text' is in both files; labels.csv's copy is the field 'text_labels'"
    assert lines[3] == "columns, in run order (5):"
    columns = lines[4:]
    assert [line.split()[1] for line in columns] == ["schema", "plan", "stats", "report", "code"]
    assert "python (tableqa:describe)" in columns[0] and columns[0].endswith("critical path 3")
    assert "needs: label, question, schema" in columns[1]
    assert "writes: n_words, n_chars" in columns[2]
    assert "llm (planner, json)" in columns[4] and columns[4].endswith("critical path 1")


# --- functions and schemas


def test_resolve_function_and_call_shape():
    base = CASES / "good"
    describe_fn = resolve_function("tableqa:describe", base)
    stats = resolve_function("tableqa:stats", base)
    assert describe_fn({"table": "t"}) == "table t"
    assert not is_async_function(describe_fn) and not accepts_context(describe_fn)
    assert is_async_function(stats) and accepts_context(stats)
    assert resolve_function("os.path:join", base)("a", "b") == "a/b"  # normal imports work too
    assert resolve_function("pkg.sub:ok", CASES / "bad_functions")({}) == 1


def test_async_callable_objects_and_context_parameters():
    class AsyncCall:
        async def __call__(self, row, ctx):
            return row

    class SyncCall:
        def __call__(self, row):
            return row

    def star(row, *args):
        return row

    assert is_async_function(AsyncCall()) and accepts_context(AsyncCall())
    assert not is_async_function(SyncCall()) and not accepts_context(SyncCall())
    assert not is_async_function(AsyncCall)  # calling the class builds an object
    assert accepts_context(star)


def test_schema_problem_accepts_valid_schemas():
    assert schema_problem({"type": "object", "properties": {"a": {"type": ["string", "null"]}}}) is None
    assert schema_problem({"anyOf": [{"type": "integer", "minimum": 0}, {"enum": ["x"]}]}) is None
    assert schema_problem({"type": "array", "items": {"type": "string"}, "minItems": -1}) == (
        "invalid JSON schema at minItems: must be a non-negative integer, got a number -1"
    )
    assert schema_problem({"required": "a"}) == "invalid JSON schema at required: must be a list of property names"


def test_module_with_a_syntax_error(tmp_path):
    (tmp_path / "treadle_bad_syntax_mod.py").write_text("def f(row)\n    return 1\n")
    with pytest.raises(FunctionLoadError) as info:
        resolve_function("treadle_bad_syntax_mod:f", tmp_path)
    assert str(info.value) == (
        "module 'treadle_bad_syntax_mod' has a syntax error at treadle_bad_syntax_mod.py line 1: expected ':'"
    )


def test_same_module_name_in_two_pipeline_folders(tmp_path):
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "treadle_same_name.py").write_text(f"def f(row):\n    return {name!r}\n")
    assert resolve_function("treadle_same_name:f", tmp_path / "one")({}) == "one"
    assert resolve_function("treadle_same_name:f", tmp_path / "two")({}) == "two"
