"""Batch python columns (`batch: true`): one call of a user function per row group (or `batch_size` rows).

The function takes a pandas DataFrame of the ready rows (indexed by row number; the seed fields and
the columns of the nodes it depends on, directly or not), and `ctx` if it declares a second argument
(as a per-cell python function: one context for the call, its LLM calls traced on the call's first
row, their tokens on the call's record), and returns one value per row: a Series,
list or 1-d array for one column; a DataFrame or a dict of lists for `columns: [...]`. Values are
taken by position. The scheduler's side (collecting a group's ready cells, one task per call) lives
in treadle.engine.batches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from treadle.engine.errors import CellError
from treadle.engine.functions import accepts_context, is_async_function
from treadle.engine.generators.base import Generator, RunMode


class BatchGenerator(Generator):
    mode = RunMode.BATCH

    def __init__(
        self,
        name: str,
        outputs: tuple[str, ...],
        function: Callable[..., Any],
        spec: str,
        batch_size: int | None,
        wanted: Callable[[str], bool],
    ) -> None:
        super().__init__(name, outputs)
        self.function = function
        self.spec = spec
        """`module:function` as the pipeline names it, for error messages."""
        self.batch_size = batch_size
        self.is_async = is_async_function(function)
        self.wants_context = accepts_context(function)
        """`function(frame, ctx)`: one ColumnContext for the call (treadle.engine.batches)."""
        self._wanted = wanted
        """Whether a row's key goes into the frame (a seed field or an upstream column)."""
        self._single = len(outputs) == 1 and outputs[0] == name
        self._filter = not outputs
        """A batch filter: one bool per row, false drops the row."""
        self.stamp: dict[str, Any] = {}
        """Added to every row's values: `<name>__version` once the column was changed (column_edits.py)."""

    def replaced(self, stamp: Mapping[str, Any], function: Callable[..., Any] | None = None) -> BatchGenerator:
        """A copy whose values carry `stamp`, calling `function` (a reloaded one) if given."""
        new = copy.copy(self)
        new.stamp = dict(stamp)
        if function is not None:
            new.function = function
            new.is_async = is_async_function(function)
            new.wants_context = accepts_context(function)
        return new

    def frame(self, columns: Mapping[str, list[Any] | np.ndarray], index: Sequence[int]) -> pd.DataFrame:
        """The DataFrame the function receives for the rows `index`, from their values column by column
        (lists, or arrays of the dtype pandas would make of them)."""
        # Row numbers are ints: an int64 index as from the list, ~10x cheaper than pandas inferring it.
        numbers = np.fromiter(index, np.int64, len(index))
        return pd.DataFrame(
            {key: values for key, values in columns.items() if self._wanted(key)}, index=pd.Index(numbers)
        )

    def split(self, result: Any, n_rows: int) -> tuple[dict[str, list[Any]], np.ndarray | None]:
        """The values of each output column from what the function returned (with the stamp's columns),
        and for a filter which rows it keeps (else None); CellError if it is not `n_rows` values."""
        values, keeps = self._split(result, n_rows)
        for key, value in self.stamp.items():
            values[key] = [value] * n_rows
        return values, keeps

    def _split(self, result: Any, n_rows: int) -> tuple[dict[str, list[Any]], np.ndarray | None]:
        if self._filter:
            keeps = self._values(result, n_rows, "")
            wrong = [keep for keep in keeps if not isinstance(keep, bool | np.bool_)]
            if wrong:  # NaN or None would keep or fail a row by accident
                raise CellError(
                    f"batch filter {self.spec} returned {type(wrong[0]).__name__} values, expected a boolean Series"
                )
            return {}, np.array(keeps, dtype=bool)
        if self._single:
            return {self.name: self._values(result, n_rows, "")}, None
        names = ", ".join(self.outputs)
        if isinstance(result, pd.DataFrame):
            present: Collection[Any] = result.columns
        elif isinstance(result, Mapping):
            present = result.keys()
        else:
            raise CellError(
                f"batch function {self.spec} returned {type(result).__name__}, "
                f"expected a DataFrame or a dict of lists with columns {names}"
            )
        missing = [column for column in self.outputs if column not in present]
        if missing:
            raise CellError(f"batch function {self.spec} returned no column {', '.join(missing)} (expected {names})")
        return {column: self._values(result[column], n_rows, f" for column {column}") for column in self.outputs}, None

    def _values(self, result: Any, n_rows: int, which: str) -> list[Any]:
        if isinstance(result, pd.Series | np.ndarray) and result.ndim == 1:
            values = result.tolist()
        elif isinstance(result, list | tuple):
            values = list(result)
        else:
            raise CellError(
                f"batch function {self.spec} returned {type(result).__name__}{which}, "
                f"expected a Series or list of {n_rows} values"
            )
        if len(values) != n_rows:
            raise CellError(f"batch function {self.spec} returned {len(values)} values{which} for {n_rows} rows")
        return values
