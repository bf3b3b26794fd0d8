"""Reading a pipeline file: `${VAR}` expansion, `.env` beside the file, and the YAML quirks handled.

Each test writes a real pipeline (and its seed) into tmp_path and loads it through `load_pipeline`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from treadle.engine.errors import ConfigError
from treadle.engine.pipeline_loading import load_pipeline

SEED = "seed: {path: seed.csv}\n"


def write(folder: Path, yaml_text: str, files: dict[str, str] | None = None) -> Path:
    """A pipeline.yaml (and a one-row seed.csv, plus any other files) in `folder`; returns the pipeline."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seed.csv").write_text("q\nhi\n")
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    pipeline = folder / "pipeline.yaml"
    pipeline.write_text(yaml_text)
    return pipeline


def template_pipeline(template: str) -> str:
    return SEED + f"columns:\n  - {{name: a, kind: template, template: {template!r}}}\n"


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, env=env)
    return [str(p) for p in info.value.problems]


# --- ${VAR} expansion


def test_a_default_applies_when_the_variable_is_unset_or_empty(tmp_path):
    path = write(tmp_path, template_pipeline("${SET:-x} ${UNSET:-fallback} ${EMPTY:-} ${EMPTY:-also} [${EMPTY}]"))
    loaded = load_pipeline(path, env={"SET": "value", "EMPTY": ""})
    assert loaded.config.columns[0].template == "value fallback  also []"


def test_dollar_escape_default_and_numbers_after_expansion(tmp_path):
    path = write(
        tmp_path,
        SEED + "columns:\n"
        '  - {name: a, kind: template, template: "$${LITERAL} ${GREETING:-hello} ${EMPTY:-fallback} {{ q }}"}\n'
        "run: {max_parallel: '${PAR}'}\n",
    )
    loaded = load_pipeline(path, env={"EMPTY": "", "PAR": "7"})
    assert loaded.config.columns[0].template == "${LITERAL} hello fallback {{ q }}"
    assert loaded.config.run.max_parallel == 7


def test_every_unset_variable_is_reported_at_its_key_path(tmp_path):
    path = write(
        tmp_path,
        SEED + "models: {m: {model: '${MODEL_NAME}'}}\n"
        "columns:\n  - {name: plan, kind: llm, model: m, prompt: '${PROMPT} and ${1BAD}'}\n",
    )
    assert problems(path, env={}) == [
        "pipeline.yaml: models.m.model: environment variable MODEL_NAME is not set (set it, put it in .env "
        "beside the pipeline, or write ${MODEL_NAME:-default})",
        "pipeline.yaml: columns[0] 'plan'.prompt: environment variable PROMPT is not set (set it, put it in .env "
        "beside the pipeline, or write ${PROMPT:-default})",
        "pipeline.yaml: columns[0] 'plan'.prompt: '${1BAD}' is not a variable reference (${NAME} or ${NAME:-default})",
    ]


def test_the_process_environment_is_used_when_no_env_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("TREADLE_TEST_LOADING_GREETING", "from the environment")
    path = write(tmp_path, template_pipeline("${TREADLE_TEST_LOADING_GREETING}"))
    assert load_pipeline(path).config.columns[0].template == "from the environment"


# --- .env beside the pipeline


def test_dotenv_beside_the_pipeline_is_read_literally_and_the_environment_wins(tmp_path, monkeypatch):
    path = write(
        tmp_path / "project",
        template_pipeline("${FROM_FILE} ${BOTH} ${RAW}"),
        {".env": "FROM_FILE=dotenv\nBOTH=dotenv\nRAW=x${FROM_FILE}y\n"},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("FROM_FILE=wrong folder\n")
    monkeypatch.chdir(elsewhere)  # only the .env beside the pipeline counts, not the working directory's
    loaded = load_pipeline(path, env={"BOTH": "environment"})
    assert loaded.config.columns[0].template == "dotenv environment x${FROM_FILE}y"


def test_a_folder_holding_pipeline_yaml_may_be_given(tmp_path, monkeypatch):
    write(tmp_path / "project", template_pipeline("hi"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_pipeline("project", env={}).graph.order == ("a",)
    with pytest.raises(ConfigError, match=r"^elsewhere: is a directory without a pipeline\.yaml$"):
        load_pipeline("elsewhere", env={})


def test_problems_name_the_file_as_typed_or_by_name_when_absolute(tmp_path, monkeypatch):
    write(tmp_path / "project", SEED + "columns: []\n")
    monkeypatch.chdir(tmp_path)
    assert problems(Path("project/pipeline.yaml"), env={}) == [
        "project/pipeline.yaml: columns: is empty; a pipeline needs at least one column"
    ]
    assert problems(tmp_path / "project" / "pipeline.yaml", env={}) == [
        "pipeline.yaml: columns: is empty; a pipeline needs at least one column"
    ]


# --- YAML quirks


def test_only_true_and_false_are_booleans(tmp_path):
    path = write(
        tmp_path,
        "seed: {path: seed.csv, join: {path: labels.csv, on: q}}\n"
        "columns:\n"
        "  - {name: a, kind: template, template: yes}\n"
        "  - {name: b, kind: template, template: off}\n"
        "run: {trace: FALSE}\n",
        {"labels.csv": "q,label\nhi,1\n"},
    )
    loaded = load_pipeline(path, env={})
    assert loaded.config.seed.join is not None and loaded.config.seed.join.on == "q"  # YAML 1.1 reads `on` as True
    assert [c.template for c in loaded.config.columns] == ["yes", "off"]
    assert loaded.config.run.trace is False


def test_a_key_written_twice_is_reported_with_its_line(tmp_path):
    path = write(
        tmp_path,
        SEED + "columns:\n  - name: a\n    kind: template\n    template: hi\n    name: b\nrun: {}\nrun: {}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, env={})
    found = sorted(info.value.problems, key=lambda p: p.line or 0)
    assert [(p.file, p.line, p.key, p.message) for p in found] == [
        ("pipeline.yaml", 6, "", "duplicate key 'name'"),
        ("pipeline.yaml", 8, "", "duplicate key 'run'"),
    ]
    assert [str(p) for p in found] == [
        "pipeline.yaml: line 6: duplicate key 'name'",
        "pipeline.yaml: line 8: duplicate key 'run'",
    ]


def test_a_key_a_merge_brings_in_may_be_overridden(tmp_path):
    path = write(
        tmp_path,
        SEED + "columns:\n  - &first {name: a, kind: template, template: '{{ q }}'}\n  - <<: *first\n    name: b\n",
    )
    assert load_pipeline(path, env={}).graph.order == ("a", "b")


def test_a_byte_order_mark_is_accepted_and_other_encodings_name_the_line(tmp_path):
    path = write(tmp_path, "")
    path.write_bytes(b"\xef\xbb\xbf" + template_pipeline("hi").encode())
    assert load_pipeline(path, env={}).config.columns[0].template == "hi"
    path.write_bytes(SEED.encode() + b"columns:\n  - {name: caf\xe9, kind: template, template: hi}\n")
    assert problems(path, env={}) == ["pipeline.yaml: line 3: not UTF-8 text"]


def test_file_not_found_empty_or_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"^nope\.yaml: file not found$"):
        load_pipeline(tmp_path / "nope.yaml")
    (tmp_path / "pipeline.yaml").write_text("# nothing\n")
    with pytest.raises(ConfigError, match=r"^pipeline\.yaml: file is empty"):
        load_pipeline(tmp_path / "pipeline.yaml")
    (tmp_path / "pipeline.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"^pipeline\.yaml: expected a mapping .*got a list$"):
        load_pipeline(tmp_path / "pipeline.yaml")
