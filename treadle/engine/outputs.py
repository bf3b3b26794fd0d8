"""The run directory's files: row-group parquet files, output.parquet, failures.jsonl, summary.json.

While a run is unfinished, each finished row group has a file in groups/ (its rows with their cell
states) and the journal has the cells finished since. Once every cell has settled and output.parquet
is written, `compact` keeps the cell states alone in cells.parquet and deletes groups/ and the journal:
output.parquet already holds the values. A resume of such a directory first `expand`s it back.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from treadle.engine.rows import GroupValues

ROW_FIELD = "__row"
"""Seed row index, kept in row-group files so output assembly can leave dropped rows out."""
STATES_FIELD = "__states"
"""Each row's cell states (one byte per column, in the order of the `treadle.columns` metadata)."""
COLUMNS_KEY = b"treadle.columns"
INTERNAL_FIELDS = (ROW_FIELD, STATES_FIELD)
DROPPED_FIELD = "__dropped"
"""cells.parquet: a row left out of output.parquet (its states are empty)."""
GROUP_SIZE_KEY = b"treadle.row_group_size"
_OUTPUT_ROW_GROUP = 65_536
"""Rows per parquet row group of output.parquet (a power of two: see bench/RESULTS.md, reading the seed)."""
_FILE_THREADS = 8
"""Threads writing or deleting group files at once: their fsyncs and unlinks overlap."""
_INDEX_SCHEMA = pa.schema([(ROW_FIELD, pa.int64()), (STATES_FIELD, pa.binary())])


def _arrow_column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        # Mixed types in one column (a function returning int here and str there): keep them as text.
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values])


def _states_array(states: np.ndarray | list[bytes]) -> pa.Array:
    """Each row's cell states as one binary value (from the rows of a (rows, nodes) uint8 array: no
    bytes object per row)."""
    if isinstance(states, list):
        return pa.array(states, pa.binary())
    n_rows, n_nodes = states.shape
    offsets = pa.py_buffer(np.arange(0, (n_rows + 1) * n_nodes, n_nodes, dtype=np.int32))
    return pa.Array.from_buffers(pa.binary(), n_rows, [None, offsets, pa.py_buffer(np.ascontiguousarray(states))])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _read_parquet(path: Path) -> pa.Table:
    # Not pq.read_table: through the datasets layer, reading thousands of group files kept ~200 bytes
    # resident per row read (measured: 43 MB more for 200k rows, 4 MB this way).
    with pq.ParquetFile(path) as handle:
        return handle.read()


def _write_atomically(path: Path, table: pa.Table, **options: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **options)
    _fsync_file(tmp)
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
        self.trace_path = path / "trace.parquet"
        self.journal_path = path / "journal.jsonl"
        self.record_path = path / "run.json"
        self.cells_path = path / "cells.parquet"

    def create(self) -> None:
        self.groups_dir.mkdir(parents=True, exist_ok=True)

    def release(self) -> None:
        """Remove a claimed directory that the run never used (it failed to start)."""
        if self.claimed:
            with contextlib.suppress(OSError):  # not empty after all, or gone: leave it as it is
                self.path.rmdir()

    def worker_journal_path(self, worker: int) -> Path:
        """The journal of one engine process of a run with several (`--workers`)."""
        return self.path / f"journal-w{worker}.jsonl"

    def journal_paths(self) -> list[Path]:
        """Every journal of the run: its own and those of its worker processes."""
        return [self.journal_path, *sorted(self.path.glob("journal-w*.jsonl"))]

    def group_path(self, group: int) -> Path:
        return self.groups_dir / f"rg-{group:06d}.parquet"

    def write_group(self, group: int, values: GroupValues, columns: Sequence[str], nodes: Sequence[str]) -> None:
        """Write one row group's rows with their cell states (blocking: call from a thread); `columns`
        come first, in order, then any other key the rows have (side-effect columns)."""
        keys = list(columns)
        known = set(keys)
        found = values.columns.keys() if values.columns is not None else (k for r in values.records or () for k in r)
        for key in found:
            if key not in known:
                known.add(key)
                keys.append(key)
        n_rows = len(values.rows)
        if values.columns is not None:
            lists = [values.columns.get(key) or [None] * n_rows for key in keys]
        else:
            lists = [[record.get(key) for record in values.records or ()] for key in keys]
        arrays = [pa.array(values.rows, pa.int64()), _states_array(values.states)]
        arrays += [_arrow_column(column) for column in lists]
        table = pa.Table.from_arrays(arrays, names=[*INTERNAL_FIELDS, *keys])
        table = table.replace_schema_metadata({COLUMNS_KEY: json.dumps(list(nodes)).encode()})
        _write_atomically(self.group_path(group), table)

    def assemble_output(self, groups: Iterable[int], dropped_rows: set[int]) -> pa.Table:
        """Join the row-group files into output.parquet, leaving dropped rows out (temp name, fsync,
        rename). Returns each output row's seed row and cell states (`ROW_FIELD`, `STATES_FIELD`)."""
        paths = [p for p in (self.group_path(g) for g in groups) if p.exists()]
        dropped = np.zeros(max(dropped_rows, default=-1) + 1, dtype=bool)
        dropped[list(dropped_rows)] = True
        schema = _unified_schema([pq.read_schema(p) for p in paths])
        tmp = self.output_path.with_name(self.output_path.name + ".tmp")
        rows: list[np.ndarray] = []
        states: list[pa.Array] = []
        pending: list[pa.Table] = []
        pending_rows = 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in paths:
                table = _read_parquet(path)
                if dropped.any():  # rows dropped after their group was written
                    seed_rows = table.column(ROW_FIELD).to_numpy()
                    listed = seed_rows < len(dropped)  # rows past the last dropped one are kept
                    keep = np.ones(len(seed_rows), dtype=bool)
                    keep[listed] = ~dropped[seed_rows[listed]]
                    table = table.filter(pa.array(keep, type=pa.bool_()))  # typed even when empty
                # Copies: a slice of the table would keep all of its buffers, the whole output, alive.
                rows.append(table.column(ROW_FIELD).to_numpy().copy())
                states.append(pa.concat_arrays(table.column(STATES_FIELD).chunks or [pa.array([], pa.binary())]))
                pending.append(_conform(table.drop_columns(list(INTERNAL_FIELDS)), schema))
                pending_rows += table.num_rows
                if pending_rows >= _OUTPUT_ROW_GROUP:  # parquet row groups of many files, not of one
                    writer.write_table(pa.concat_tables(pending))
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending))
        _fsync_file(tmp)  # compact() deletes the group files on the strength of this file
        os.replace(tmp, self.output_path)
        row_array = pa.array(np.concatenate(rows) if rows else np.array([], np.int64), pa.int64())
        state_array = pa.concat_arrays(states) if states else pa.array([], pa.binary())
        return pa.Table.from_arrays([row_array, state_array], schema=_INDEX_SCHEMA)

    def compact(self, index: pa.Table, dropped_rows: Iterable[int], nodes: Sequence[str], group_size: int) -> None:
        """After output.parquet is written for a finished run: the cell states to cells.parquet, then
        groups/ and the journal deleted. A kill at any point leaves a directory `expand` or the usual
        resume reads: cells.parquet is complete before anything is deleted."""
        dropped = sorted(dropped_rows)
        table = pa.table(
            {
                ROW_FIELD: pa.concat_arrays([index.column(ROW_FIELD).combine_chunks(), pa.array(dropped, pa.int64())]),
                STATES_FIELD: pa.concat_arrays(
                    [index.column(STATES_FIELD).combine_chunks(), pa.array([b""] * len(dropped), pa.binary())]
                ),
                DROPPED_FIELD: pa.array(np.arange(index.num_rows + len(dropped)) >= index.num_rows),
            }
        )
        metadata = {COLUMNS_KEY: json.dumps(list(nodes)).encode(), GROUP_SIZE_KEY: str(group_size).encode()}
        # Seed rows delta-encoded rather than dictionary-encoded: a fraction of the size, and the
        # dictionary's hash table cost ~180 bytes resident per row (measured at 200k rows).
        _write_atomically(
            self.cells_path,
            table.replace_schema_metadata(metadata),
            use_dictionary=[STATES_FIELD, DROPPED_FIELD],
            column_encoding={ROW_FIELD: "DELTA_BINARY_PACKED"},
        )
        # Best effort from here: the outputs are complete and the directory resumable whatever is left.
        with contextlib.suppress(OSError):
            for journal in self.journal_paths():
                journal.unlink(missing_ok=True)
            # From several threads: an unlink took ~2.7 ms on a disk mounted with `discard`, one after
            # another 27 s for a 1M-row run's 10,000 files.
            with ThreadPoolExecutor(_FILE_THREADS, thread_name_prefix="treadle-compact") as pool:
                list(pool.map(os.unlink, list(self.groups_dir.iterdir())))
            self.groups_dir.rmdir()

    def expand(self) -> None:
        """Undo `compact` before a resume: the group files again from output.parquet and cells.parquet,
        and the dropped rows in a fresh journal; cells.parquet goes last (a kill meanwhile: expand again)."""
        cells = pq.read_table(self.cells_path)
        metadata = cells.schema.metadata or {}
        nodes = json.loads(metadata[COLUMNS_KEY])
        group_size = int(metadata[GROUP_SIZE_KEY])
        dropped = cells.column(DROPPED_FIELD).to_numpy(zero_copy_only=False)
        kept = cells.filter(pa.array(~dropped)).select(list(INTERNAL_FIELDS))
        output = pq.read_table(self.output_path, memory_map=True)
        if output.num_rows != kept.num_rows:
            raise OSError(f"{self.output_path} has {output.num_rows} rows, {self.cells_path.name} says {kept.num_rows}")
        groups = kept.column(ROW_FIELD).to_numpy() // group_size
        n_groups = int(pc.max(cells.column(ROW_FIELD)).as_py() or 0) // group_size + 1 if cells.num_rows else 0
        self.groups_dir.mkdir(exist_ok=True)

        def write(group: int) -> None:
            start, stop = (int(i) for i in np.searchsorted(groups, [group, group + 1]))
            rows = output.slice(start, stop - start)
            table = pa.Table.from_arrays(
                [*kept.slice(start, stop - start).columns, *rows.columns], names=[*INTERNAL_FIELDS, *rows.column_names]
            )
            _write_atomically(
                self.group_path(group), table.replace_schema_metadata({COLUMNS_KEY: metadata[COLUMNS_KEY]})
            )

        # From several threads (one after another, each file's fsync waits for the disk in turn).
        with ThreadPoolExecutor(_FILE_THREADS, thread_name_prefix="treadle-expand") as pool:
            list(pool.map(write, range(n_groups)))
        dropped_rows = cells.column(ROW_FIELD).filter(pa.array(dropped)).to_pylist()
        tmp = self.journal_path.with_name(self.journal_path.name + ".tmp")
        lines = [{"columns": nodes}, *([[[row, -1, None] for row in dropped_rows]] if dropped_rows else [])]
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        _fsync_file(tmp)
        os.replace(tmp, self.journal_path)
        self.cells_path.unlink()

    def read_written_row(self, row: int, group: int) -> dict[str, Any] | None:
        """A row whose group was written: from its group file, or from output.parquet after `compact`."""
        path = self.group_path(group)
        if path.exists():
            found = pq.read_table(path, filters=[(ROW_FIELD, "=", row)]).to_pylist()
            return found[0] if found else None
        if not (self.cells_path.exists() and self.output_path.exists()):
            return None
        cells = pq.read_table(self.cells_path, columns=[ROW_FIELD, DROPPED_FIELD])
        kept = cells.filter(pc.invert(cells.column(DROPPED_FIELD))).column(ROW_FIELD).to_numpy()
        positions = np.flatnonzero(kept == row)
        if not len(positions):
            return None
        position = int(positions[0])
        output = pq.ParquetFile(self.output_path)
        for i in range(output.metadata.num_row_groups):
            size = output.metadata.row_group(i).num_rows
            if position < size:
                return output.read_row_group(i).slice(position, 1).to_pylist()[0]
            position -= size
        return None

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

    def write_failures(
        self, failures: Iterable[dict[str, Any]], filtered: Iterable[tuple[dict[str, Any], np.ndarray]] = ()
    ) -> None:
        """One line per failure, and per row a filter dropped (`filtered`: a filter's line for row 0,
        and its rows, written from that line's text: rows by the million), all in row order."""
        records = list(failures)
        lines = [json.dumps(record, default=str) + "\n" for record in records]
        rows = [np.array([record["row"] for record in records], dtype=np.int64)]
        for record, filtered_rows in filtered:
            rest = ", " + json.dumps({k: v for k, v in record.items() if k != "row"}, default=str)[1:] + "\n"
            lines += ['{"row": ' + str(row) + rest for row in filtered_rows.tolist()]
            rows.append(filtered_rows.astype(np.int64))
        all_rows = np.concatenate(rows)
        if len(all_rows) > 1 and not bool((all_rows[1:] >= all_rows[:-1]).all()):
            lines = [lines[i] for i in np.argsort(all_rows, kind="stable").tolist()]
        with open(self.failures_path, "w", encoding="utf-8") as handle:
            handle.write("".join(lines))

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
