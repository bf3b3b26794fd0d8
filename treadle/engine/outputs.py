"""The run directory's files: row-group parquet files, output.parquet, failures.jsonl, summary.json."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ROW_FIELD = "__row"
"""Seed row index, kept in row-group files so output assembly can leave dropped rows out."""
STATES_FIELD = "__states"
"""Each row's cell states (one byte per column, in the order of the `treadle.columns` metadata)."""
COLUMNS_KEY = b"treadle.columns"
INTERNAL_FIELDS = (ROW_FIELD, STATES_FIELD)


def _arrow_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        # Mixed types in one column (a function returning int here and str there): keep them as text.
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values])


def _write_atomically(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RunDirectory:
    def __init__(self, path: Path, *, claimed: bool = False) -> None:
        self.path = path
        self.claimed = claimed
        """Made empty by treadle for this run (a default directory), so `release` may remove it."""
        self.groups_dir = path / "groups"
        self.output_path = path / "output.parquet"
        self.failures_path = path / "failures.jsonl"
        self.summary_path = path / "summary.json"
        self.trace_path = path / "trace.jsonl"
        self.journal_path = path / "journal.jsonl"
        self.record_path = path / "run.json"

    def create(self) -> None:
        self.groups_dir.mkdir(parents=True, exist_ok=True)

    def release(self) -> None:
        """Remove a claimed directory that the run never used (it failed to start)."""
        if self.claimed:
            with contextlib.suppress(OSError):  # not empty after all, or gone: leave it as it is
                self.path.rmdir()

    def group_path(self, group: int) -> Path:
        return self.groups_dir / f"rg-{group:06d}.parquet"

    def write_group(
        self,
        group: int,
        rows: Sequence[tuple[int, dict[str, Any]]],
        columns: Sequence[str],
        states: Sequence[bytes],
        nodes: Sequence[str],
    ) -> None:
        """Write one row group's rows with their cell states (blocking: call from a thread)."""
        keys = list(columns)
        known = set(keys)
        for _, values in rows:
            for key in values:
                if key not in known:
                    known.add(key)
                    keys.append(key)
        arrays = [pa.array([row for row, _ in rows], pa.int64()), pa.array(list(states), pa.binary())]
        arrays += [_arrow_column([values.get(key) for _, values in rows]) for key in keys]
        table = pa.Table.from_arrays(arrays, names=[*INTERNAL_FIELDS, *keys])
        table = table.replace_schema_metadata({COLUMNS_KEY: json.dumps(list(nodes)).encode()})
        _write_atomically(self.group_path(group), table)

    def assemble_output(self, groups: Iterable[int], dropped_rows: set[int]) -> int:
        """Join the row-group files into output.parquet, leaving dropped rows out; returns the row count."""
        paths = [p for p in (self.group_path(g) for g in groups) if p.exists()]
        schema = _unified_schema([pq.read_schema(p) for p in paths])
        tmp = self.output_path.with_name(self.output_path.name + ".tmp")
        written = 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in paths:
                table = pq.read_table(path)
                if dropped_rows:
                    keep = [row not in dropped_rows for row in table.column(ROW_FIELD).to_pylist()]
                    table = table.filter(pa.array(keep, type=pa.bool_()))  # typed even when empty
                table = _conform(table.drop_columns(list(INTERNAL_FIELDS)), schema)
                writer.write_table(table)
                written += table.num_rows
        os.replace(tmp, self.output_path)
        return written

    def read_group_states(self, group: int) -> tuple[list[str], list[int], list[bytes]] | None:
        """A written group's column order, rows and cell states; None if it was not written."""
        path = self.group_path(group)
        if not path.exists():
            return None
        table = pq.read_table(path, columns=list(INTERNAL_FIELDS))
        nodes = json.loads((table.schema.metadata or {}).get(COLUMNS_KEY, b"[]"))
        return nodes, table.column(ROW_FIELD).to_pylist(), table.column(STATES_FIELD).to_pylist()

    def read_group_rows(self, group: int) -> dict[int, dict[str, Any]]:
        """A written group's rows by seed row index (values only)."""
        table = pq.read_table(self.group_path(group))
        return {row.pop(ROW_FIELD): row for row in table.drop_columns([STATES_FIELD]).to_pylist()}

    def write_failures(self, failures: Iterable[dict[str, Any]]) -> None:
        with open(self.failures_path, "w", encoding="utf-8") as handle:
            for failure in failures:
                handle.write(json.dumps(failure, default=str) + "\n")

    def write_summary(self, summary: dict[str, Any]) -> None:
        tmp = self.summary_path.with_name("summary.json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.summary_path)


def _unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    fields: dict[str, pa.DataType] = {}
    for schema in schemas:
        for schema_field in schema:
            if schema_field.name in INTERNAL_FIELDS:
                continue
            seen = fields.get(schema_field.name)
            if seen is None or pa.types.is_null(seen):
                fields[schema_field.name] = schema_field.type
            elif seen != schema_field.type and not pa.types.is_null(schema_field.type):
                try:
                    fields[schema_field.name] = (
                        pa.unify_schemas(
                            [
                                pa.schema([(schema_field.name, seen)]),
                                pa.schema([(schema_field.name, schema_field.type)]),
                            ],
                            promote_options="permissive",
                        )
                        .field(0)
                        .type
                    )
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    fields[schema_field.name] = pa.string()
    return pa.schema(list(fields.items()))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = []
    for schema_field in schema:
        if schema_field.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, schema_field.type))
            continue
        column = table.column(schema_field.name)
        if column.type != schema_field.type:
            try:
                column = column.cast(schema_field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                column = pa.array(
                    [v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in column.to_pylist()],
                    schema_field.type,
                )
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)
