"""The journal: an append-only record of finished cells, so a killed run loses only what was in flight.

Completions are appended to a list on the hot path; the first one in a loop iteration schedules a
flush for the next iteration, which writes the batch as one JSON line, `[[row, node, values], ...]`
(node -1 for a dropped row), and hands it to the OS. So a finished cell reaches the OS within one
loop iteration (a killed process loses nothing it finished), while a burst of cheap cells costs one
encode and one write. A batch call's cells are one columnar line, `{"node": n, "rows": [...],
"values": {column: [...]}}` (node -1 and no values: rows dropped together, `filtered_by` the filter
that took them, if one did). Each opening of the
journal first writes `{"columns": [...]}`, naming the nodes the following lines count. fsync happens
at row-group boundaries and at the end. `replay` reads a journal back, ignoring a torn last line.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

_DROP = -1


class Journal:
    def __init__(self, path: Path, columns: Sequence[str], on_error: Callable[[OSError], None]) -> None:
        self.path = path
        self._on_error = on_error
        self.columns = list(columns)
        self._pending: list[tuple[int, int, Any]] = []
        self._pending_calls: list[dict[str, Any]] = []
        """Columnar entries (batch calls, rows dropped together), written after the cells of `_pending`."""
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: TextIO | None = None

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._handle.write(json.dumps({"columns": self.columns}) + "\n")
        self._handle.flush()

    def done(self, row: int, node: int, values: dict[str, Any]) -> None:
        self._pending.append((row, node, values))
        if not self._scheduled:  # inline: this runs for every finished cell
            self._schedule()

    def dropped(self, row: int, filtered_by: str | None = None) -> None:
        """A dropped row: `[row, -1, filtered_by]`, the filter column that took it (if one did)."""
        self._pending.append((row, _DROP, filtered_by))
        self._schedule()

    def done_call(self, node: int, rows: list[int], values: dict[str, list[Any]]) -> None:
        """A batch call's cells, done together: `values` holds each output column's values, row by row."""
        self._pending_calls.append({"node": node, "rows": rows, "values": values})
        self._schedule()

    def dropped_rows(self, rows: list[int], filtered_by: str | None = None) -> None:
        """Rows dropped together: `{"node": -1, "rows": [...], "filtered_by": column}` (if a filter took them)."""
        self._pending_calls.append({"node": _DROP, "rows": rows, "filtered_by": filtered_by})
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is pending and hand it to the OS (on the engine loop)."""
        self._scheduled = False
        if not (self._pending or self._pending_calls) or self._handle is None:
            return
        batch, self._pending = self._pending, []
        calls, self._pending_calls = self._pending_calls, []
        lines = ([batch] if batch else []) + calls
        try:
            self._handle.write("".join(json.dumps(line, default=str, separators=(",", ":")) + "\n" for line in lines))
            self._handle.flush()
        except OSError as exc:  # disk full, file too large: the run stops; what is done stays done
            self._pending = batch + self._pending
            self._pending_calls = calls + self._pending_calls
            self._on_error(exc)

    def sync(self) -> None:
        """fsync what was flushed (blocking: the writer thread calls it at row-group boundaries)."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        self.flush()
        if self._handle is not None:
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


@dataclass
class Replayed:
    done: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """row -> column -> that column's values (outputs and side-effect columns)."""
    dropped: set[int] = field(default_factory=set)
    filtered: dict[int, str] = field(default_factory=dict)
    """Dropped rows a filter took -> the filter's column."""


def replay(path: Path, skip_row: Callable[[int], bool] = lambda row: False) -> Replayed:
    """What a journal says was finished (done cells only of rows `skip_row` keeps) and dropped; a torn
    last line (a kill mid-write) is ignored."""
    replayed = Replayed()
    if not path.exists():
        return replayed
    columns: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and "columns" in entry:
                columns = entry["columns"]
                continue
            for row, node, values in _cells(entry):
                if node == _DROP:
                    replayed.dropped.add(row)
                    if values is not None:
                        replayed.filtered[row] = values
                elif not skip_row(row):
                    replayed.done.setdefault(row, {})[columns[node]] = values
    return replayed


def _cells(entry: Any) -> Iterator[tuple[int, int, Any]]:
    """A journal line's (row, node, values), whether a line of cells or a columnar line."""
    if isinstance(entry, list):
        yield from entry
        return
    node, rows = entry["node"], entry["rows"]
    if node == _DROP:
        for row in rows:
            yield row, _DROP, entry.get("filtered_by")
        return
    names = list(entry["values"])
    if not names:  # a filter's kept rows: done, no values
        for row in rows:
            yield row, node, {}
        return
    for row, row_values in zip(rows, zip(*entry["values"].values(), strict=True), strict=True):
        yield row, node, dict(zip(names, row_values, strict=True))
