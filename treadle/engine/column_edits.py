"""Fixing a column while its run goes on: what may change, how a change is checked, and the versions.

`prepare_edit` checks a change to an llm column's prompt, system prompt, temperature or max tokens, to
a template column's template, or to a filter's expression, as `treadle validate` would (pydantic's
field checks, Jinja2 syntax, unknown fields), and refuses one line when the change would need a
column the edited one does not already depend on (the run's dependency counters are fixed).
`Versions` is the pipeline's history kept in run.json: version 1 is the pipeline as the run started;
each applied change (an edit, or a python column's or filter's function reloaded) is the next
version, with its time, column, and old and new text.

Which version made each cell: a changed column's generator is wrapped in `VersionStamped` (a batch
column's is a copy of it that stamps the values of its calls), so every value it makes carries
`<column>__version` (the version that last changed the column). That side column goes through the
journal, the row-group files and resume like any other, costs nothing for columns never changed,
and exists only for columns changed at least once. Cells made before a column's first change carry
no stamp while the run goes; `stamp_first_version` writes 1 for them into output.parquet once the
run has written it. summary.json lists the versions (`versions`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from jinja2 import TemplateError
from pydantic import ValidationError

from treadle.engine.errors import ConfigError, Problem
from treadle.engine.functions import function_file
from treadle.engine.generators.base import Generator
from treadle.engine.graph import LLM_SIDE_EFFECTS, ColumnGraph
from treadle.engine.pipeline import FilterColumn, LLMColumn, PythonColumn, TemplateColumn
from treadle.engine.pipeline_validation import LoadedPipeline, source_hash
from treadle.engine.templates import row_expression

EDITABLE: dict[type, tuple[str, ...]] = {
    LLMColumn: ("prompt", "system", "temperature", "max_tokens"),
    TemplateColumn: ("template",),
    FilterColumn: ("expression",),
}
"""What a person may change in a running column, by column kind (a filter: only an expression one's)."""
ALIASES = {"system_prompt": "system"}


def editable_fields(config: Any) -> tuple[str, ...]:
    """What may change in the column `config` while its run goes (none: its function is reloaded instead)."""
    if isinstance(config, FilterColumn) and config.expression is None:
        return ()
    return EDITABLE.get(type(config), ())


def reloadable_function(loaded: LoadedPipeline, column: str) -> str:
    """The `module:function` of a python column or a function filter (batch or not); ValueError otherwise."""
    config = column_config(loaded, column)
    function = getattr(config, "function", None)
    if not isinstance(config, PythonColumn | FilterColumn) or function is None:
        what = "an expression filter" if isinstance(config, FilterColumn) else f"a {config.kind} column"
        raise ValueError(f"{column} is {what}: only a python column's or a filter's function can be reloaded")
    return function


@dataclass(frozen=True)
class ColumnEdit:
    """A checked change to one column, not applied yet."""

    column: str
    changes: dict[str, tuple[Any, Any]]
    """Field -> (old value, new value); only the fields whose value changes."""
    loaded: LoadedPipeline
    """The pipeline with the change."""


def available_fields(loaded: LoadedPipeline, column: str) -> list[str]:
    """What `column`'s templates may read without a new dependency: seed fields, and the columns (and
    llm side-effect columns) of the columns it depends on, directly or not, in run order."""
    graph = loaded.graph
    upstream = ancestors(graph, column)
    fields = list(loaded.seed.fields)
    for name in graph.order:
        if name in upstream:
            node = graph.nodes[name]
            fields += node.outputs
            if isinstance(node.config, LLMColumn):
                fields += [f"{out}__{side}" for out in node.outputs for side in LLM_SIDE_EFFECTS]
    return fields


@dataclass(frozen=True)
class ColumnSettings:
    """A column as an editor shows it."""

    name: str
    kind: str
    values: dict[str, Any]
    """The editable fields' values now (an llm column's prompt, system, temperature, max_tokens; a
    template's template; an expression filter's expression); empty for python columns and function filters."""
    available: list[str]
    """What its templates may read (`available_fields`)."""
    function: str | None
    """A python or filter column's `module:function`."""
    source: str | None
    """The file a python column's or filter's function comes from (what F5 reloads)."""
    version: int
    """The pipeline version that last changed it (1: never changed)."""


def column_settings(loaded: LoadedPipeline, column: str, version: int) -> ColumnSettings:
    config = column_config(loaded, column)
    values = {key: getattr(config, key) for key in editable_fields(config)}
    function = getattr(config, "function", None)
    source = function_file(function) if function is not None else None
    return ColumnSettings(
        column,
        config.kind,
        values,
        available_fields(loaded, column),
        function,
        None if source is None else str(source),
        version,
    )


def prepare_edit(loaded: LoadedPipeline, column: str, changes: Mapping[str, Any]) -> ColumnEdit:
    """Check a change to `column`; raises ValueError with one line saying what is wrong (nothing applied)."""
    config = column_config(loaded, column)
    allowed = editable_fields(config)
    if not allowed:
        hint = " (reload its function instead)" if getattr(config, "function", None) else ""
        raise ValueError(
            f"{column} is a {config.kind} column: only llm prompts and parameters, templates and filter "
            f"expressions can be edited{hint}"
        )
    wanted = {ALIASES.get(key, key): value for key, value in changes.items()}
    if unknown := [key for key in wanted if key not in allowed]:
        raise ValueError(
            f"{column}: cannot change {', '.join(unknown)} of a {config.kind} column (it has {', '.join(allowed)})"
        )
    try:
        edited = type(config).model_validate({**config.model_dump(), **wanted})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"{column}.{where}: {error['msg']}") from None
    diffs = {key: (getattr(config, key), getattr(edited, key)) for key in wanted}
    diffs = {key: pair for key, pair in diffs.items() if pair[0] != pair[1]}
    columns = [edited if c.name == column else c for c in loaded.config.columns]
    try:
        graph = ColumnGraph.build(columns, loaded.seed.fields, loaded.path.name if loaded.path else "PipelineConfig")
    except ConfigError as exc:
        raise ValueError(_one_line(column, exc.problems[0])) from None
    if isinstance(edited, FilterColumn) and edited.expression is not None:
        _check_expression(column, edited)
    new_needs = set(graph.nodes[column].upstream) - ancestors(loaded.graph, column)
    if new_needs:
        raise ValueError(
            f"{column}: reads {', '.join(sorted(new_needs))}, which it does not depend on; a new dependency "
            f"needs a new run (it may read: {', '.join(available_fields(loaded, column))})"
        )
    pipeline = loaded.config.model_copy(update={"columns": columns})
    edited_loaded = dataclasses.replace(loaded, config=pipeline, graph=graph, source_hash=source_hash(pipeline))
    return ColumnEdit(column, diffs, edited_loaded)


def _check_expression(column: str, config: FilterColumn) -> None:
    """A filter's expression compiles as one expression (`{{ a }} and {{ b }}` is two templates, not one)."""
    try:
        row_expression(config.expression_body() or "")
    except TemplateError as exc:
        raise ValueError(f"{column}.expression: not one expression: {exc}") from None


def column_config(loaded: LoadedPipeline, column: str) -> Any:
    """The column's config; ValueError naming the columns when there is none of that name."""
    node = loaded.graph.nodes.get(column)
    if node is None:
        raise ValueError(f"no column named {column!r} (columns: {', '.join(loaded.graph.order)})")
    return node.config


def ancestors(graph: ColumnGraph, column: str) -> set[str]:
    """The columns `column` depends on, directly or not."""
    found: set[str] = set()
    frontier = list(graph.nodes[column].upstream)
    while frontier:
        name = frontier.pop()
        if name not in found:
            found.add(name)
            frontier.extend(graph.nodes[name].upstream)
    return found


def _one_line(column: str, problem: Problem) -> str:
    """`plan.prompt: unknown column or seed field 'questoin' (did you mean 'question'?)`."""
    suffix = problem.key.rsplit("'", 1)[-1] if "'" in problem.key else ""
    return f"{column}{suffix}: {problem.message}"


def apply_edits(loaded: LoadedPipeline, history: Sequence[Mapping[str, Any]]) -> LoadedPipeline:
    """The pipeline with a run's recorded edits applied in order (resume continues with its latest version)."""
    for entry in history:
        if entry.get("kind") == "edit":
            wanted = {key: change["new"] for key, change in entry["changes"].items()}
            loaded = prepare_edit(loaded, entry["column"], wanted).loaded
    return loaded


@dataclass
class Versions:
    """The pipeline's versions after the first: what changed, when, from what to what (run.json's `versions`)."""

    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current(self) -> int:
        return self.history[-1]["version"] if self.history else 1

    def of_column(self, column: str) -> int:
        """The version that last changed `column` (1: never changed)."""
        return next((e["version"] for e in reversed(self.history) if e["column"] == column), 1)

    def columns(self) -> list[str]:
        """Columns changed at least once, in the order of their first change."""
        return list(dict.fromkeys(e["column"] for e in self.history))

    def add(self, column: str, kind: str, changes: Mapping[str, tuple[Any, Any]], pipeline_hash: str) -> int:
        """Record a change (`edit` or `reload`) as the next version; returns its number."""
        version = self.current + 1
        self.history.append(
            {
                "version": version,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "column": column,
                "kind": kind,
                "changes": {key: {"old": old, "new": new} for key, (old, new) in changes.items()},
                "source_hash": pipeline_hash,
            }
        )
        return version


class VersionStamped(Generator):
    """A changed column's generator: every value it makes says which version made it (`<name>__version`)."""

    def __init__(self, inner: Generator, version: int) -> None:
        super().__init__(inner.name, inner.outputs)
        self.inner = inner
        self.version = version
        self.mode = inner.mode
        self.limit_key = inner.limit_key
        self.wants_context = inner.wants_context
        self.cache = getattr(inner, "cache", None)
        self._stamp = {f"{inner.name}__version": version}

    def generate(self, row: Mapping[str, Any], *ctx: Any) -> dict[str, Any]:
        return {**self.inner.generate(row, *ctx), **self._stamp}

    async def agenerate(self, row: Mapping[str, Any], *ctx: Any) -> dict[str, Any]:
        return {**await self.inner.agenerate(row, *ctx), **self._stamp}

    # The response cache's lookups (engine/cache_hits.py), for an llm column: a hit's values are stamped too.
    def cache_lookup(self, row: Mapping[str, Any]) -> Any:
        return self.inner.cache_lookup(row)  # type: ignore[attr-defined]

    def hit_values(self, answer: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.inner.hit_values(answer), **self._stamp}  # type: ignore[attr-defined]

    def missed(self, row: Mapping[str, Any], messages: list[dict[str, str]], key: str) -> None:
        self.inner.missed(row, messages, key)  # type: ignore[attr-defined]


def unstamped(generator: Generator) -> Generator:
    return generator.inner if isinstance(generator, VersionStamped) else generator


def stamp_first_version(output_path: Path, made: Mapping[str, Any]) -> None:
    """In output.parquet, `<column>__version` = 1 for the cells of changed columns made before their first
    change (done, without a stamp). `made`: column -> per output row, whether its generator made the
    cell (a numpy bool array). Rewritten a parquet row group at a time (temp name, fsync, rename)."""
    source = pq.ParquetFile(output_path)
    tmp = output_path.with_name(output_path.name + ".tmp")
    writer: pq.ParquetWriter | None = None
    offset = 0
    try:
        for i in range(source.metadata.num_row_groups):
            table = source.read_row_group(i)
            rows = slice(offset, offset + table.num_rows)
            offset += table.num_rows
            for column, done in made.items():
                key = f"{column}__version"
                stamps = table.column(key).to_pylist() if key in table.column_names else [None] * table.num_rows
                filled = pa.array(
                    [1 if stamp is None and d else stamp for stamp, d in zip(stamps, done[rows], strict=True)],
                    pa.int64(),
                )
                if key in table.column_names:
                    table = table.set_column(table.column_names.index(key), key, filled)
                else:
                    table = table.append_column(key, filled)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, output_path)
