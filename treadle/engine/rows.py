"""Row values of the row groups in flight: seed fields plus the columns computed so far.

Per-cell columns read and extend one dict per row. A pipeline made only of batch columns keeps no
row dicts: its groups' values stay column-wise (the seed's columns, each batch call's output lists),
which is what the batch calls' DataFrames and the row-group files are made from, at no cost per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from treadle.engine.seed_rows import SeedRows, seed_columns, seed_records


@dataclass
class GroupValues:
    """What a row-group file holds: its rows left in (not dropped), their cell states, their values."""

    rows: np.ndarray
    """Seed row numbers."""
    states: np.ndarray | list[bytes]
    """Each row's cell states: a (rows, nodes) array, or one bytes per row."""
    records: list[dict[str, Any]] | None = None
    """The rows' values, one dict per row (per-cell pipelines) ..."""
    columns: dict[str, list[Any]] | None = None
    """... or one list per column (pipelines of batch columns only)."""


class RowStore:
    """Holds values only for admitted row groups, so memory follows the groups in flight."""

    def __init__(self, frame: SeedRows, group_size: int, row_dicts: bool = True) -> None:
        self.frame = frame
        self.group_size = group_size
        self.row_dicts = row_dicts
        """One dict per row (some column runs cell by cell); else values are kept column-wise."""
        self.rows: dict[int, dict[str, Any]] = {}
        self._columns: dict[int, dict[str, list[Any]]] = {}
        """Without row dicts: group -> column -> its values for the group's rows (None: not computed)."""
        self.restored: dict[int, dict[str, Any]] = {}
        """Values of cells finished before a resume, merged into their rows when the group loads."""

    @classmethod
    def for_columns(cls, frame: SeedRows, group_size: int, columns: Sequence[object]) -> RowStore:
        """The store for a pipeline's columns: row dicts unless every column is a batch column."""
        return cls(frame, group_size, row_dicts=not all(getattr(column, "batch", False) for column in columns))

    def _group_range(self, group: int) -> range:
        start = group * self.group_size
        return range(start, min(start + self.group_size, len(self.frame)))

    def load_group(self, group: int) -> None:
        rows = self._group_range(group)
        if not self.row_dicts:
            if group not in self._columns:
                self._columns[group] = seed_columns(self.frame, rows.start, rows.stop)
                for row in rows if self.restored else ():
                    restored = self.restored.pop(row, None)
                    if restored:
                        self._set(row, restored)
            return
        if rows.start in self.rows:
            return
        records = seed_records(self.frame, rows.start, rows.stop)
        for offset, record in enumerate(records):
            restored = self.restored.pop(rows.start + offset, None)
            if restored:
                record.update(restored)
            self.rows[rows.start + offset] = record

    def release_group(self, group: int) -> None:
        if not self.row_dicts:
            self._columns.pop(group, None)
            return
        for row in self._group_range(group):
            self.rows.pop(row, None)

    def row(self, row: int) -> dict[str, Any] | None:
        """A row's values so far, if its group is loaded."""
        if self.row_dicts:
            return self.rows.get(row)
        columns = self._columns.get(row // self.group_size)
        if columns is None:
            return None
        offset = row % self.group_size
        return {key: values[offset] for key, values in columns.items() if values[offset] is not None}

    def set_values(self, row: int, values: dict[str, Any]) -> None:
        """Set one row's values (a cell that took its column's default)."""
        if self.row_dicts:
            self.rows[row].update(values)
        else:
            self._set(row, values)

    def _set(self, row: int, values: dict[str, Any]) -> None:
        columns = self._columns[row // self.group_size]
        offset = row % self.group_size
        for key, value in values.items():
            if key not in columns:
                columns[key] = [None] * len(self._group_range(row // self.group_size))
            columns[key][offset] = value

    def set_columns(self, rows: Sequence[int], values: dict[str, list[Any]]) -> None:
        """Store a batch call's values: `values[column][i]` is row `rows[i]`'s (rows of one group)."""
        if self.row_dicts:
            for i, row in enumerate(rows):
                self.rows[row].update({key: column[i] for key, column in values.items()})
            return
        group = rows[0] // self.group_size
        columns = self._columns[group]
        span = self._group_range(group)
        whole = len(rows) == len(span)  # the whole group, in order (a call's rows are sorted)
        for key, column in values.items():
            if whole:
                columns[key] = list(column)
                continue
            stored = columns.get(key)
            if stored is None:
                stored = columns[key] = [None] * len(span)
            for row, value in zip(rows, column, strict=True):
                stored[row - span.start] = value

    def columns(self, rows: Sequence[int]) -> dict[str, list[Any]]:
        """The values of `rows` (of one group) column by column: what a batch call's DataFrame is made of."""
        if self.row_dicts:
            records = [self.rows[row] for row in rows]
            return {key: [record.get(key) for record in records] for key in records[0]}
        group = rows[0] // self.group_size
        columns = self._columns[group]
        if len(rows) == len(self._group_range(group)):
            return dict(columns)
        start = group * self.group_size
        offsets = [row - start for row in rows]
        return {key: [values[i] for i in offsets] for key, values in columns.items()}

    def group_values(self, group: int, states: np.ndarray, kept: np.ndarray) -> GroupValues:
        """A finished group's contents for its file: `states` its cells' states (rows, nodes), `kept`
        which of its rows are left in."""
        span = self._group_range(group)
        rows = np.arange(span.start, span.stop)[kept]
        if self.row_dicts:
            return GroupValues(rows, states[kept], records=[self.rows[row] for row in rows.tolist()])
        columns = self._columns[group]
        if bool(kept.all()):
            return GroupValues(rows, states, columns=dict(columns))
        offsets = np.flatnonzero(kept).tolist()
        return GroupValues(
            rows, states[kept], columns={key: [values[i] for i in offsets] for key, values in columns.items()}
        )
