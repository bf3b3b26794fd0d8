"""The pipeline file as pydantic models (seed, models, columns, run settings), and its loader.

`load_pipeline` reads a pipeline file, expands `${VAR}`, validates it, reads the seed, checks every
reference and builds the column graph; `load_pipeline_config` does the same checks for a
`PipelineConfig` built in Python. Both report every problem at once in one `ConfigError`, one line
per problem, each starting with the file name and the place (`pipeline.yaml: columns[3] 'plan'.prompt`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from treadle.engine.errors import ConfigError, Problem, describe_value
from treadle.engine.limits import LIMIT_MAX, PYTHON_THREADS_MAX
from treadle.engine.schemas import schema_problem

if TYPE_CHECKING:
    from treadle.engine.graph import ColumnGraph
    from treadle.engine.seed import SeedTable


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read `true` as 1
        raise ValueError(f"should be a whole number (got {describe_value(value)})")
    return value


LimitValue = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=LIMIT_MAX)]
"""A concurrency or size limit: a whole number from 1 to LIMIT_MAX."""


def check_base_url(url: str) -> str | None:
    """Why `url` cannot be an endpoint's base URL (None when it can): it must be http(s) with a host.
    A `${VAR}` left in it is reported as unset where it is expanded."""
    if "${" in url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, got {url!r}"
    if not parts.hostname:
        return f"must name a host, got {url!r}"
    return None


class JoinConfig(_Strict):
    path: str
    """Second table (csv, jsonl or parquet), relative to the pipeline file."""
    on: str
    """Key present in both tables; an inner join, unmatched rows are reported."""


class SeedConfig(_Strict):
    path: str
    """Seed table (csv, jsonl or parquet), relative to the pipeline file."""
    join: JoinConfig | None = None
    """Optional inner join with a second table on a key."""


class ModelPrices(_Strict):
    """What a model's tokens cost, per million, in any currency (the same for every model of a run)."""

    input_per_1m: float = Field(ge=0, allow_inf_nan=False)
    """Per million prompt tokens."""
    output_per_1m: float = Field(ge=0, allow_inf_nan=False)
    """Per million completion tokens."""


class ModelConfig(_Strict):
    model: str
    """The model name the endpoint knows."""
    base_url: str | None = None
    """Any OpenAI-compatible endpoint; None means the client's default."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; keys never live in files."""
    max_parallel: LimitValue = 32
    """Most requests in flight to this model at once: a ceiling the adaptive limit stays under."""
    rpm: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=LIMIT_MAX)] | None = None
    """Requests per minute the endpoint allows this key, if known: starts are paced to it."""
    tpm: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=LIMIT_MAX)] | None = None
    """Tokens (prompt + completion) per minute the endpoint allows, if known: starts are paced to it."""
    adaptive: bool = True
    """Find the endpoint's sustainable rate from its answers (429/503, Retry-After, x-ratelimit headers)
    and stay under it; false sends at the ceiling and budgets only."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-request timeout; defaults to the run's timeout_s."""
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the endpoint with every request."""
    retries: int | None = Field(default=None, ge=0)
    """Extra attempts for a retryable failure of this model's cells; defaults to the run's retries."""
    prices: ModelPrices | None = None
    """Optional: gives the cost of the run's tokens in summary.json and `treadle report`."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and (reason := check_base_url(url)):
            raise ValueError(reason)
        return url


class DefaultOnFailure(_Strict):
    default: Any
    """The value a failed cell takes (marked degraded); its dependents run on it."""


OnFailure = Literal["fail", "skip_row"] | DefaultOnFailure


class _ColumnBase(_Strict):
    name: str
    """The column's name; later columns refer to it in templates and depends_on."""
    depends_on: list[str] = Field(default_factory=list)
    """Columns this one needs besides those its templates mention."""
    retries: int | None = Field(default=None, ge=0)
    """Extra attempts for a retryable failure; defaults to the model's, then the run's."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-attempt timeout; defaults to the model's, then the run's."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Time a cell may take over all its attempts and waits; defaults to the run's cell_deadline_s."""
    on_failure: OnFailure = "fail"
    """When the cell fails for good: `fail` (dependents are blocked), `skip_row` (the row is left out of
    the output, the reason recorded) or `{default: VALUE}` (the cell takes VALUE, marked degraded)."""


class LLMColumn(_ColumnBase):
    kind: Literal["llm"]
    model: str
    """A key of the pipeline's models."""
    prompt: str
    """Jinja2 template of the user message."""
    system: str | None = None
    """Jinja2 template of the system message."""
    output_schema: dict[str, Any] | None = None
    """JSON schema; when set the output is JSON validated against it."""


class PythonColumn(_ColumnBase):
    kind: Literal["python"]
    function: str
    """`module:function`, module resolved relative to the pipeline's folder; sync or async."""
    columns: list[str] | None = None
    """Several output columns from one call: the function returns a dict with these keys."""


class TemplateColumn(_ColumnBase):
    kind: Literal["template"]
    template: str
    """Jinja2 template rendered over the row."""


ColumnConfig = Annotated[LLMColumn | PythonColumn | TemplateColumn, Field(discriminator="kind")]


class EarlyStopConfig(_Strict):
    window: int = Field(default=50, ge=1)
    """How many of the most recent attempts are looked at."""
    error_rate: float = Field(default=0.8, gt=0, le=1)
    """The share of failed attempts in the window that pauses the run (rate limits do not count)."""


class RunConfig(_Strict):
    name: str | None = None
    """Run name; defaults to the pipeline file's stem."""
    row_group_size: LimitValue = 100
    """Rows per row group: the unit of admission, checkpoint and output file."""
    row_groups_in_flight: LimitValue = 4
    """Row groups admitted at once; bounds memory."""
    max_parallel: LimitValue = 64
    """Execution slots: cells running at once across all columns."""
    python_threads: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=PYTHON_THREADS_MAX)] | None = None
    """Threads for sync python functions; defaults to max_parallel, at most 1024."""
    retries: int = Field(default=3, ge=0)
    """Extra attempts for a cell whose failure is retryable."""
    backoff_s: float = Field(default=1.0, ge=0)
    """First retry delay; doubles each attempt, with jitter."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Per-attempt timeout of one cell."""
    cell_deadline_s: float | None = Field(default=None, gt=0)
    """Time a cell may take over all its attempts and backoff waits (none by default)."""
    trace: bool = True
    """Record a TaskTrace per attempt (ring buffer for the UI, trace.jsonl in the run directory)."""
    salvage_rounds: int = Field(default=1, ge=0)
    """Extra rounds, at the end of the run, for cells that spent their attempts on retryable errors."""
    early_stop: EarlyStopConfig | None = Field(default_factory=lambda: EarlyStopConfig())
    """Pause the run when most recent attempts fail (endpoint down, key revoked); null turns it off."""


class PipelineConfig(_Strict):
    seed: SeedConfig
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    columns: list[ColumnConfig]
    run: RunConfig = Field(default_factory=RunConfig)

    def output_columns(self, column: ColumnConfig) -> list[str]:
        """The columns a column config writes: its `columns` list or its own name."""
        return output_columns(column)


def output_columns(column: ColumnConfig) -> list[str]:
    """The columns a column config writes: its `columns` list or its own name."""
    if isinstance(column, PythonColumn) and column.columns:
        return list(column.columns)
    return [column.name]


# ---------------------------------------------------------------------------------------------------
# Loading and validation


@dataclass
class LoadedPipeline:
    """A pipeline that passed every check: its config, seed rows and column graph."""

    path: Path | None
    """The pipeline file; None for a `PipelineConfig` built in Python."""
    base_dir: Path
    """Folder relative paths and python modules resolve from."""
    name: str
    """`run.name`, or the pipeline file's stem."""
    config: PipelineConfig
    """The config after `${VAR}` expansion."""
    seed: SeedTable
    graph: ColumnGraph
    source_hash: str
    """sha256 of the resolved config's canonical JSON: tells a changed pipeline on resume."""


def load_pipeline(path: str | Path, *, env: Mapping[str, str] | None = None) -> LoadedPipeline:
    """Read, expand, validate and check a pipeline file; raises `ConfigError` with every problem.

    `${VAR}` and `${VAR:-default}` expand in every string value from `env` (default: `os.environ`) and
    a `.env` file beside the pipeline (the environment wins; `.env` values are taken literally).
    `$${` writes a literal `${`. A directory holding a `pipeline.yaml` may be given instead of the file.
    """
    file = Path(path)
    if file.is_dir() and (file / "pipeline.yaml").is_file():
        file = file / "pipeline.yaml"
    where = str(file) if not file.is_absolute() else file.name
    base_dir = file.resolve().parent
    raw = _read_yaml(file, where)
    variables = _variables(base_dir, env)
    problems: list[Problem] = []  # unset variables first, then whatever else is wrong
    data = _expand(raw, variables, (), raw, where, problems)
    config = None
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, data, where))
    if config is None or problems:
        if not any(p.where.startswith(f"{where}: seed") for p in problems):
            problems.extend(_seed_only_problems(data, base_dir, where))
        raise ConfigError(_in_file_order(problems))
    return load_pipeline_config(config, base_dir, where=where, path=file.resolve())


def load_pipeline_config(
    config: PipelineConfig | Mapping[str, Any],
    base_dir: str | Path | None = None,
    *,
    where: str = "PipelineConfig",
    path: Path | None = None,
) -> LoadedPipeline:
    """Check a config built in Python (`treadle.run(PipelineConfig(...))`) exactly as a file is checked.

    A plain mapping is validated as a `PipelineConfig` first (no `${VAR}` expansion). `base_dir`
    (default: the working directory) is where seed paths and python modules resolve; `where` starts
    every problem's place.
    """
    from treadle.engine.graph import ColumnGraph
    from treadle.engine.seed import load_seed

    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    if not isinstance(config, PipelineConfig):
        try:
            config = PipelineConfig.model_validate(config)
        except ValidationError as exc:
            found = _validation_problems(exc, config, where)
            found.extend(_seed_only_problems(config, base, where))
            raise ConfigError(_in_file_order(found)) from None
    problems: list[Problem] = []
    if not config.columns:
        problems.append(Problem(f"{where}: columns", "is empty; a pipeline needs at least one column"))
    seed = None
    try:
        seed = load_seed(config.seed, base, f"{where}: seed")
    except ConfigError as exc:
        problems.extend(exc.problems)
    problems.extend(_column_problems(config, base, where))
    graph = None
    try:
        graph = ColumnGraph.build(config.columns, None if seed is None else seed.fields, where)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or seed is None or graph is None:
        raise ConfigError(_in_file_order(problems))
    stem = path.stem if path is not None else "pipeline"
    return LoadedPipeline(
        path=path,
        base_dir=base,
        name=config.run.name or stem,
        config=config,
        seed=seed,
        graph=graph,
        source_hash=source_hash(config),
    )


def source_hash(config: PipelineConfig) -> str:
    """sha256 of the config's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """Problems about columns sorted by column index (stable), after everything else."""

    def key(problem: Problem) -> tuple[int, int]:
        m = re.search(r"columns\[(\d+)\]", problem.where)
        return (1, int(m.group(1))) if m else (0, 0)

    return sorted(problems, key=key)


# --- reading the file


class _Loader(yaml.SafeLoader):
    """A safe loader that records duplicate mapping keys (PyYAML silently keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int]] = []


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:  # keys as written: a `<<` merge may be overridden, that is no duplicate
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        try:
            if key in seen:
                loader.duplicates.append((str(key), key_node.start_mark.line + 1))
            seen.add(key)
        except TypeError:  # an unhashable key; construct_mapping reports it
            pass
    loader.flatten_mapping(node)
    return loader.construct_mapping(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 booleans only: in YAML 1.1 `on`, `off`, `yes`, `no` are booleans, so `join: {on: id}`
# would have the key True. Here they stay strings; only true/false (any case) are booleans.
_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _read_yaml(file: Path, where: str) -> dict[str, Any]:
    def fail(message: str, at: str = where) -> ConfigError:
        return ConfigError([Problem(at, message)])

    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise fail("file not found") from None
    except IsADirectoryError:
        raise fail("is a directory without a pipeline.yaml") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise fail("not UTF-8 text", f"{where}: line {line}") from None
    loader = _Loader(text)
    try:
        raw = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{where}: line {mark.line + 1}" if mark else where
        message = f"YAML syntax error: {exc.problem or exc}"
        if exc.context:
            started = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message += f" ({exc.context}{started})"
        raise fail(" ".join(message.split()), at) from None
    except yaml.YAMLError as exc:
        raise fail(f"YAML error: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            [Problem(f"{where}: line {line}", f"duplicate key '{key}'") for key, line in loader.duplicates]
        )
    if raw is None:
        raise fail("file is empty; a pipeline needs seed: and columns:")
    if not isinstance(raw, dict):
        raise fail(f"expected a mapping with seed:, columns: (and models:, run:), got {describe_value(raw)}")
    return raw


# --- ${VAR} expansion

_VAR = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _variables(base_dir: Path, env: Mapping[str, str] | None) -> dict[str, str]:
    variables: dict[str, str] = {}
    dotenv = base_dir / ".env"
    if dotenv.is_file():
        values = dotenv_values(dotenv, interpolate=False)
        variables.update({k: v for k, v in values.items() if v is not None})
    variables.update(os.environ if env is None else env)
    return variables


def _expand(
    value: Any,
    variables: Mapping[str, str],
    loc: tuple[Any, ...],
    raw: Any,
    where: str,
    problems: list[Problem],
) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, variables, (*loc, k), raw, where, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, variables, (*loc, i), raw, where, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        body = m.group(1)
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            problems.append(
                Problem(
                    f"{where}: {_key_path(loc, raw)}",
                    f"'${{{body}}}' is not a variable reference (${{NAME}} or ${{NAME:-default}})",
                )
            )
            return m.group(0)
        found = variables.get(name)
        if found is None or (sep and found == ""):
            if sep:
                return default
            problems.append(
                Problem(
                    f"{where}: {_key_path(loc, raw)}",
                    f"environment variable {name} is not set (set it, put it in .env beside the pipeline, "
                    f"or write ${{{name}:-default}})",
                )
            )
            return m.group(0)
        return found

    return _VAR.sub(substitute, value)


# --- readable places and pydantic errors


def _column_kinds() -> dict[str, type[BaseModel]]:
    union = get_args(ColumnConfig)[0]
    return {get_args(m.model_fields["kind"].annotation)[0]: m for m in get_args(union)}


_KINDS = _column_kinds()


def _key_path(loc: tuple[Any, ...], raw: Any) -> str:
    """('columns', 2, 'prompt') -> "columns[2] 'plan'.prompt" (the column's name read from the raw data)."""
    text = ""
    node = raw
    for k, part in enumerate(loc):
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
            if k == 1 and loc[0] == "columns":
                item = node[part] if isinstance(node, list) and part < len(node) else None
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    text += f" '{item['name']}'"
        else:
            text += f".{part}" if text else str(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return text or "(top level)"


def _display_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tag pydantic puts in a column's error location: ('columns', 3, 'llm', 'prompt')."""
    if len(loc) >= 3 and loc[0] == "columns" and isinstance(loc[1], int) and loc[2] in _KINDS:
        return (*loc[:2], *loc[3:])
    return loc


def _candidates(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _candidates(get_args(annotation)[0])
    if origin is Union or type(annotation).__name__ == "UnionType":
        return [t for arg in get_args(annotation) for t in _candidates(arg)]
    return [annotation]


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model at a pydantic error location (tags included), to suggest its field names."""
    types: list[Any] = [PipelineConfig]
    for part in loc:
        nxt: list[Any] = []
        tagged = len(types) > 1  # a union of column kinds: pydantic's next part is the tag
        for t in types:
            origin = get_origin(t)
            if isinstance(t, type) and issubclass(t, BaseModel):
                if tagged:
                    if _KINDS.get(part) is t:
                        nxt.append(t)
                elif part in t.model_fields:
                    nxt += _candidates(t.model_fields[part].annotation)
            elif origin is list and isinstance(part, int):
                nxt += _candidates(get_args(t)[0])
            elif origin is dict and isinstance(part, str):
                nxt += _candidates(get_args(t)[1])
        types = nxt
    models = [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if len(models) == 1 else None


def _validation_problems(exc: ValidationError, data: Any, where: str) -> list[Problem]:
    problems: list[Problem] = []
    kinds = ", ".join(_KINDS)
    for error in exc.errors():
        loc = tuple(error["loc"])
        shown = _display_loc(loc)
        kind, value = error["type"], error.get("input")
        at = f"{where}: {_key_path(shown, data)}"
        if kind == "union_tag_invalid":
            tag = error.get("ctx", {}).get("tag")
            close = difflib.get_close_matches(str(tag), list(_KINDS), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(Problem(f"{at}.kind", f"unknown kind '{tag}' (expected {kinds}){hint}"))
        elif kind == "union_tag_not_found":
            problems.append(Problem(f"{at}.kind", f"missing (expected {kinds})"))
        elif kind == "missing":
            parent = f"{where}: {_key_path(shown[:-1], data)}"
            problems.append(Problem(parent, f"missing required field '{shown[-1]}'"))
        elif kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            fields = list(model.model_fields) if model else []
            close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else (f" (expected one of {', '.join(fields)})" if fields else "")
            )
            problems.append(Problem(at, f"unknown field '{loc[-1]}'{hint}"))
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            problems.append(Problem(at, f"expected a mapping, got {describe_value(value)}"))
        elif kind == "list_type":
            problems.append(Problem(at, f"expected a list, got {describe_value(value)}"))
        elif kind == "value_error":  # a validator's own message names the value
            problems.append(Problem(at, str(error.get("ctx", {}).get("error", error["msg"]))))
        elif kind in ("int_type", "int_from_float", "int_parsing"):
            problems.append(Problem(at, f"should be a whole number (got {describe_value(value)})"))
        else:
            message = " ".join(str(error["msg"]).split())
            message = re.sub(r"^Input should", "should", message)
            problems.append(Problem(at, f"{message} (got {describe_value(value)})"))
    return problems


def _seed_only_problems(data: Any, base_dir: Path, where: str) -> list[Problem]:
    """When the file as a whole is invalid, still check the seed files if the seed section is valid."""
    from treadle.engine.seed import load_seed

    if not isinstance(data, dict):
        return []
    try:
        seed = SeedConfig.model_validate(data.get("seed"))
    except ValidationError:
        return []
    try:
        load_seed(seed, base_dir, f"{where}: seed")
    except ConfigError as exc:
        return exc.problems
    return []


# --- per-column checks that the graph does not make


def _column_problems(config: PipelineConfig, base_dir: Path, where: str) -> list[Problem]:
    from treadle.engine.functions import FunctionLoadError, resolve_function, signature_problem

    problems: list[Problem] = []
    models = list(config.models)
    for i, column in enumerate(config.columns):
        place = f"{where}: columns[{i}] '{column.name}'"
        if isinstance(column, LLMColumn):
            if column.model not in config.models:
                if not models:
                    known = "no models are defined under models:"
                else:
                    close = difflib.get_close_matches(column.model, models, n=1)
                    known = f"models: {', '.join(models)}" + (f"; did you mean '{close[0]}'?" if close else "")
                problems.append(Problem(f"{place}.model", f"undefined model '{column.model}' ({known})"))
            if column.output_schema is not None and (bad := schema_problem(column.output_schema)):
                problems.append(Problem(f"{place}.output_schema", bad))
        elif isinstance(column, PythonColumn):
            try:
                fn = resolve_function(column.function, base_dir)
            except FunctionLoadError as exc:
                problems.append(Problem(f"{place}.function", str(exc)))
            else:
                if bad := signature_problem(fn):
                    problems.append(Problem(f"{place}.function", f"'{column.function}' {bad}"))
    return problems


def describe(loaded: LoadedPipeline) -> list[str]:
    """The lines `treadle validate` prints: the seed (rows, fields, join) and the columns in run order."""
    seed = loaded.seed
    config = loaded.config
    lines = [f"seed: {config.seed.path}: {len(seed.frame)} rows; fields: {_short_list(seed.fields)}"]
    if seed.join is not None:
        j = seed.join
        lines.append(
            f"join: {j.right} on '{j.key}': {j.matched} matched; {j.left_only} only in {j.left}"
            + (f" (e.g. {', '.join(j.left_only_examples)})" if j.left_only_examples else "")
            + f"; {j.right_only} only in {j.right}"
            + (f" (e.g. {', '.join(j.right_only_examples)})" if j.right_only_examples else "")
        )
        for old, new in j.renamed:
            lines.append(f"join: '{old}' is in both files; {j.right}'s copy is the field '{new}'")
    lines.append(f"columns, in run order ({len(loaded.graph)}):")
    rows = []
    for node in loaded.graph:
        column = node.config
        if isinstance(column, LLMColumn):
            kind = f"llm ({column.model}{', json' if column.output_schema is not None else ''})"
        elif isinstance(column, PythonColumn):
            kind = f"python ({column.function})"
        else:
            kind = "template"
        rows.append(
            (
                f"{node.index + 1}.",
                node.name,
                kind,
                f"needs: {_short_list(node.inputs) or '-'}",
                f"writes: {_short_list(node.outputs)}",
                f"critical path {node.critical_path}",
            )
        )
    widths = [max(len(r[k]) for r in rows) for k in range(5)] if rows else []
    for row in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
    return lines


def _short_list(names: Any, limit: int = 12) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
