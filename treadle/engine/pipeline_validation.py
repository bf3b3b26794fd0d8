"""Checking a pipeline config: every problem at once, and the summary `treadle validate` prints.

`load_pipeline_config` turns a `PipelineConfig` (or a mapping, or a file's data via `validate_config`)
into a `LoadedPipeline`: it reads the seed, checks every reference, model, function and schema, and
builds the column graph. Problems come in one `ConfigError`, one line each, placed by file, key path
and line (`pipeline.yaml: columns[3] 'plan'.prompt: ...`), whole-file problems before column ones.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from treadle.engine.errors import ConfigError, Problem, describe_value, in_file_order
from treadle.engine.functions import FunctionLoadError, resolve_function, signature_problem
from treadle.engine.graph import ColumnGraph, Node
from treadle.engine.pipeline import ColumnConfig, FilterColumn, LLMColumn, PipelineConfig, PythonColumn, SeedConfig
from treadle.engine.schemas import schema_problem
from treadle.engine.seed import SeedTable, load_seed

__all__ = [
    "LoadedPipeline",
    "describe",
    "load_pipeline_config",
    "problem_at",
    "source_hash",
    "validate_config",
]


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


def load_pipeline_config(
    config: PipelineConfig | Mapping[str, Any],
    base_dir: str | Path | None = None,
    *,
    file: str = "PipelineConfig",
    path: Path | None = None,
) -> LoadedPipeline:
    """Check a config built in Python (`treadle.run(PipelineConfig(...))`) exactly as a file is checked.

    A plain mapping is validated as a `PipelineConfig` first (no `${VAR}` expansion). `base_dir`
    (default: the working directory) is where seed paths and python modules resolve; `file` names
    where every problem is (the pipeline file's name, or `PipelineConfig`).
    """
    base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    if not isinstance(config, PipelineConfig):
        config = validate_config(config, base, file)
    seed, graph = _seed_and_graph(config, base, file)
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
    """sha256 of the config's canonical JSON (sorted keys, no spaces), without the response cache's
    settings: they change no answer, so resuming after turning the cache off is resuming the same run."""
    dump = config.model_dump(mode="json", exclude=_CACHE_SETTINGS)
    for column in dump["columns"]:  # unset column overrides leave the hash of pipelines written before them
        for name in _COLUMN_OVERRIDES:
            if column.get(name, 0) is None:
                del column[name]
    text = json.dumps(dump, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


_COLUMN_OVERRIDES = ("temperature", "max_tokens")
_CACHE_SETTINGS: Any = {
    "run": {"cache", "cache_max_mb"},
    "models": {"__all__": {"cache"}},
    "columns": {"__all__": {"cache"}},
}


def _cache_problems(config: PipelineConfig, base_dir: Path, file: str) -> list[Problem]:
    """run.cache must name a file (it is made if missing), not a directory."""
    if config.run.cache and (base_dir / config.run.cache).is_dir():
        return [Problem(file, f"names a directory ({config.run.cache}); give the cache file's path", key="run.cache")]
    return []


def validate_config(data: Any, base_dir: Path, file: str, earlier: Iterable[Problem] = ()) -> PipelineConfig:
    """`data` (a file's parsed contents, or a mapping) as a `PipelineConfig`.

    Raises `ConfigError` with the `earlier` problems (unset variables) and every field problem; the
    seed files are checked too when the seed section itself is fine, so a bad data file shows up
    alongside the config's other mistakes.
    """
    problems = list(earlier)
    config = None
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_field_problem(error, data, file) for error in exc.errors())
    if config is None or problems:
        if not any(p.file == file and (p.key == "seed" or p.key.startswith("seed.")) for p in problems):
            problems.extend(_seed_section_problems(data, base_dir, file))
        raise ConfigError(in_file_order(problems))
    return config


def _seed_and_graph(config: PipelineConfig, base_dir: Path, file: str) -> tuple[SeedTable, ColumnGraph]:
    """Read the seed, check the columns and build the graph; raises `ConfigError` with every problem."""
    problems: list[Problem] = []
    if not config.columns:
        problems.append(Problem(file, "is empty; a pipeline needs at least one column", key="columns"))
    seed = None
    try:
        seed = load_seed(config.seed, base_dir, file)
    except ConfigError as exc:
        problems.extend(exc.problems)
    problems.extend(_column_problems(config, base_dir, file))
    problems.extend(_cache_problems(config, base_dir, file))
    graph = None
    try:
        graph = ColumnGraph.build(config.columns, None if seed is None else seed.fields, file)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems or seed is None or graph is None:
        raise ConfigError(in_file_order(problems))
    return seed, graph


def _seed_section_problems(data: Any, base_dir: Path, file: str) -> list[Problem]:
    """When the file as a whole is invalid, still check the seed files if the seed section is valid."""
    if not isinstance(data, dict):
        return []
    try:
        seed = SeedConfig.model_validate(data.get("seed"))
    except ValidationError:
        return []
    try:
        load_seed(seed, base_dir, file)
    except ConfigError as exc:
        return exc.problems
    return []


# --- places: a pydantic location as the key path a user reads


def problem_at(file: str, loc: tuple[Any, ...], data: Any, message: str) -> Problem:
    """A problem at a key path given as its parts, e.g. ('columns', 2, 'prompt'), which reads
    `columns[2] 'plan'.prompt` (the column's name taken from `data`, the file's contents)."""
    under_column = len(loc) >= 2 and loc[0] == "columns" and _is_index(loc[1])
    return Problem(file, message, key=_key_path(loc, data), column_index=loc[1] if under_column else None)


def _is_index(part: Any) -> bool:
    return isinstance(part, int) and not isinstance(part, bool)


def _key_path(loc: tuple[Any, ...], raw: Any) -> str:
    """('columns', 2, 'prompt') -> "columns[2] 'plan'.prompt" (the column's name read from the raw data)."""
    text = ""
    node = raw
    for k, part in enumerate(loc):
        if _is_index(part):
            text += f"[{part}]"
            if k == 1 and loc[0] == "columns":
                text += _column_name(node, part)
        else:
            text += f".{part}" if text else str(part)
        node = _child(node, part)
    return text or "(top level)"


def _column_name(columns: Any, index: int) -> str:
    """` 'plan'` for the column at `index` of the raw columns list, when it has a name."""
    item = columns[index] if isinstance(columns, list) and index < len(columns) else None
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return f" '{item['name']}'"
    return ""


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and _is_index(part) and part < len(node):
        return node[part]
    return None


# --- pydantic's errors as problems


def _column_kinds() -> dict[str, type[BaseModel]]:
    union = get_args(ColumnConfig)[0]
    return {get_args(m.model_fields["kind"].annotation)[0]: m for m in get_args(union)}


_KINDS = _column_kinds()


def _field_problem(error: Any, data: Any, file: str) -> Problem:
    """One pydantic error as a problem: placed where a user would look, worded for the mistake."""
    loc = tuple(error["loc"])
    shown = _display_loc(loc)
    kind = error["type"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return problem_at(file, (*shown, "kind"), data, _kind_message(error))
    if kind == "missing":
        return problem_at(file, shown[:-1], data, f"missing required field '{shown[-1]}'")
    if kind == "extra_forbidden":
        return problem_at(file, shown, data, _unknown_field_message(loc))
    return problem_at(file, shown, data, _value_message(kind, error))


def _display_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tag pydantic puts in a column's error location: ('columns', 3, 'llm', 'prompt')."""
    if len(loc) >= 3 and loc[0] == "columns" and _is_index(loc[1]) and loc[2] in _KINDS:
        return (*loc[:2], *loc[3:])
    return loc


def _kind_message(error: Any) -> str:
    kinds = ", ".join(_KINDS)
    if error["type"] == "union_tag_not_found":
        return f"missing (expected {kinds})"
    tag = error.get("ctx", {}).get("tag")
    close = difflib.get_close_matches(str(tag), list(_KINDS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown kind '{tag}' (expected {kinds}){hint}"


def _unknown_field_message(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc[:-1])
    fields = list(model.model_fields) if model else []
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    if close:
        return f"unknown field '{loc[-1]}' (did you mean '{close[0]}'?)"
    if fields:
        return f"unknown field '{loc[-1]}' (expected one of {', '.join(fields)})"
    return f"unknown field '{loc[-1]}'"


def _value_message(kind: str, error: Any) -> str:
    value = error.get("input")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {describe_value(value)}"
    if kind == "list_type":
        return f"expected a list, got {describe_value(value)}"
    if kind == "value_error":  # a validator's own message names the value
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"should be a whole number (got {describe_value(value)})"
    message = re.sub(r"^Input should", "should", " ".join(str(error["msg"]).split()))
    return f"{message} (got {describe_value(value)})"


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
        tagged = len(types) > 1  # a union of column kinds: pydantic's next part is the tag
        types = [t for current in types for t in _types_below(current, part, tagged)]
    models = [t for t in types if isinstance(t, type) and issubclass(t, BaseModel)]
    return models[0] if len(models) == 1 else None


def _types_below(annotation: Any, part: Any, tagged: bool) -> list[Any]:
    """The types one location part below `annotation`: a model's field, a list's item, a dict's value."""
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if tagged:
            return [annotation] if _KINDS.get(part) is annotation else []
        return _candidates(annotation.model_fields[part].annotation) if part in annotation.model_fields else []
    if origin is list and isinstance(part, int):
        return _candidates(get_args(annotation)[0])
    if origin is dict and isinstance(part, str):
        return _candidates(get_args(annotation)[1])
    return []


# --- per-column checks that the graph does not make


def _column_problems(config: PipelineConfig, base_dir: Path, file: str) -> list[Problem]:
    problems: list[Problem] = []
    for i, column in enumerate(config.columns):
        if isinstance(column, LLMColumn):
            found = _llm_column_problems(column, config)
        elif isinstance(column, PythonColumn | FilterColumn):
            found = _python_column_problems(column, base_dir)
        else:
            found = []
        problems.extend(
            Problem(file, message, key=f"columns[{i}] '{column.name}'" + (f".{field}" if field else ""), column_index=i)
            for field, message in found
        )
    return problems


def _llm_column_problems(column: LLMColumn, config: PipelineConfig) -> list[tuple[str, str]]:
    """(field, message) for an undefined model and an invalid output schema."""
    found: list[tuple[str, str]] = []
    if column.model not in config.models:
        models = list(config.models)
        if not models:
            known = "no models are defined under models:"
        else:
            close = difflib.get_close_matches(column.model, models, n=1)
            known = f"models: {', '.join(models)}" + (f"; did you mean '{close[0]}'?" if close else "")
        found.append(("model", f"undefined model '{column.model}' ({known})"))
    if column.output_schema is not None and (bad := schema_problem(column.output_schema)):
        found.append(("output_schema", bad))
    return found


def _python_column_problems(column: PythonColumn | FilterColumn, base_dir: Path) -> list[tuple[str, str]]:
    """(field, message) for a function that cannot be imported or cannot take a row (or a frame), a
    filter with neither or both of function and expression, batch settings that do not apply."""
    if column.batch_size is not None and not column.batch:
        return [("batch_size", "applies only with batch: true")]
    if isinstance(column, FilterColumn):
        if (column.function is None) == (column.expression is None):
            return [("", "a filter needs either function: or expression: (one of the two)")]
        if column.function is None:
            return [("batch", "applies only to a filter with function:")] if column.batch else []
    assert column.function is not None
    try:
        fn = resolve_function(column.function, base_dir)
    except FunctionLoadError as exc:
        return [("function", str(exc))]
    if bad := signature_problem(fn):
        return [("function", f"'{column.function}' {bad}")]
    return []


# --- what `treadle validate` prints


def describe(loaded: LoadedPipeline) -> list[str]:
    """The lines `treadle validate` prints: the seed (rows, fields, join) and the columns in run order."""
    seed = loaded.seed
    lines = [f"seed: {loaded.config.seed.path}: {len(seed.frame)} rows; fields: {_short_list(seed.fields)}"]
    lines += _join_lines(seed)
    lines.append(f"columns, in run order ({len(loaded.graph)}):")
    lines += _column_lines(loaded.graph)
    return lines


def _join_lines(seed: SeedTable) -> list[str]:
    j = seed.join
    if j is None:
        return []
    lines = [
        f"join: {j.right} on '{j.key}': {j.matched} matched; {j.left_only} only in {j.left}"
        + (f" (e.g. {', '.join(j.left_only_examples)})" if j.left_only_examples else "")
        + f"; {j.right_only} only in {j.right}"
        + (f" (e.g. {', '.join(j.right_only_examples)})" if j.right_only_examples else "")
    ]
    lines += [f"join: '{old}' is in both files; {j.right}'s copy is the field '{new}'" for old, new in j.renamed]
    return lines


def _column_lines(graph: ColumnGraph) -> list[str]:
    """One aligned line per column: position, name, kind, inputs, outputs, critical path."""
    rows = [
        (
            f"{node.index + 1}.",
            node.name,
            _kind_label(node),
            f"needs: {_short_list(node.inputs) or '-'}",
            f"writes: {_short_list(node.outputs) or '(none)'}",
        )
        for node in graph
    ]
    widths = [max(len(row[k]) for row in rows) for k in range(5)] if rows else []
    aligned = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return [f"  {text}  critical path {node.critical_path}" for text, node in zip(aligned, graph, strict=True)]


def _kind_label(node: Node) -> str:
    column = node.config
    if isinstance(column, LLMColumn):
        return f"llm ({column.model}{', json' if column.output_schema is not None else ''})"
    if isinstance(column, PythonColumn):
        return f"python ({column.function}{', batch' if column.batch else ''})"
    if isinstance(column, FilterColumn):
        return f"filter ({column.function or column.expression}{', batch' if column.batch else ''})"
    return "template"


def _short_list(names: Any, limit: int = 12) -> str:
    names = list(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
