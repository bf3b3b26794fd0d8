"""A seed's rows as the run asks for them, a row group at a time (`seed_records`): the frame
`seed_readers.load_table` read, or for a large parquet seed, `ParquetRows`, read from the file as they
are asked for, so that memory does not grow with the seed (issue 17)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """The frame `pd.read_parquet` makes of `table`: pandas 3 converts it with `DataFrame.from_arrow` (its
    string dtype, time zones), pandas 2 with pyarrow's `to_pandas` alone."""
    from_arrow = getattr(pd.DataFrame, "from_arrow", None)
    return from_arrow(table) if from_arrow else table.to_pandas()


LAZY_PARQUET_ROWS = 200_000
"""A parquet seed with at least this many rows is read as its rows are asked for (`ParquetRows`), if
pandas converts each of its columns the same way batch by batch as whole."""


class ParquetRows:
    """A large parquet seed's rows, read in batches of `batch_rows` as they are asked for: memory for a
    batch, not the table. `records(start, stop)` are the dicts `frame.iloc[start:stop].to_dict("records")`
    of `load_table`'s frame would be. Reading goes forward through the file; a row before the batch held
    starts again at its row group."""

    def __init__(self, path: Path, columns: list[str], row_group_starts: list[int], n_rows: int) -> None:
        self.path, self.columns, self.n_rows = path, columns, n_rows
        self.row_group_starts = row_group_starts
        self.batch_rows = 4_096
        self._batches: Iterator[pa.RecordBatch] | None = None
        self._first = 0
        self._held: list[dict[str, Any]] = []

    @classmethod
    def of(cls, path: Path) -> ParquetRows | None:
        """The rows of the parquet file at `path` if it is large and every column converts batch by batch
        as whole (numbers and booleans without nulls, floats, strings; no stored index); else None."""
        try:
            parquet = pq.ParquetFile(path)
        except Exception:  # not parquet, damaged: load_table says how
            return None
        meta, schema = parquet.metadata, parquet.schema_arrow
        pandas_meta = schema.pandas_metadata or {}
        if meta.num_rows < LAZY_PARQUET_ROWS or any(isinstance(i, str) for i in pandas_meta.get("index_columns", [])):
            return None
        for i, field in enumerate(schema):
            if (
                pa.types.is_floating(field.type)
                or pa.types.is_string(field.type)
                or pa.types.is_large_string(field.type)
            ):
                continue
            if not (pa.types.is_integer(field.type) or pa.types.is_boolean(field.type)) or not _no_nulls(meta, i):
                return None
        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]).tolist()
        return cls(path, [str(name) for name in schema.names], starts[:-1], meta.num_rows)

    def __len__(self) -> int:
        return self.n_rows

    def head(self, n: int) -> ParquetRows:
        """The first `n` rows (as `DataFrame.head`)."""
        return ParquetRows(self.path, self.columns, self.row_group_starts, min(n, self.n_rows))

    def records(self, start: int, stop: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        stop = min(stop, self.n_rows)
        while start < stop:
            if not self._first <= start < self._first + len(self._held):
                self._read_to(start)
            found += self._held[start - self._first : stop - self._first]
            start = self._first + len(self._held)
        return found

    def _read_to(self, row: int) -> None:
        if self._batches is None or row < self._first:
            group = int(np.searchsorted(self.row_group_starts, row, side="right")) - 1
            row_groups = range(group, len(self.row_group_starts))
            self._batches = pq.ParquetFile(self.path).iter_batches(self.batch_rows, row_groups, self.columns)
            self._first, self._held = self.row_group_starts[group], []
        while not self._first <= row < self._first + len(self._held):
            self._first += len(self._held)
            batch = next(self._batches)
            frame = arrow_to_pandas(pa.Table.from_batches([batch]))
            self._held = cast(list[dict[str, Any]], frame.to_dict("records"))


def _no_nulls(meta: pq.FileMetaData, column: int) -> bool:
    """Whether every row group's statistics say the column has no nulls."""
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is None or not stats.has_null_count or stats.null_count:
            return False
    return True


SeedRows = pd.DataFrame | ParquetRows
"""A seed's rows: the frame, or a large parquet file's read as they are asked for."""


def seed_records(rows: SeedRows, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows `start` to `stop` as dicts, field by field."""
    if isinstance(rows, ParquetRows):
        return rows.records(start, stop)
    return cast(list[dict[str, Any]], rows.iloc[start:stop].to_dict("records"))


def seed_columns(rows: SeedRows, start: int, stop: int) -> dict[str, list[Any]]:
    """Rows `start` to `stop` field by field, one list per field (a batch-only pipeline's row group)."""
    if isinstance(rows, ParquetRows):
        records = rows.records(start, stop)
        return {key: [record[key] for record in records] for key in rows.columns}
    part = rows.iloc[start:stop]
    return {key: part[key].tolist() for key in part.columns}
