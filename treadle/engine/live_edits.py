"""The engine side of fixing a column while its run goes on (the change is checked in column_edits.py).

`ColumnEditor` runs on the engine loop (the controller hands it commands there): it swaps a column's
generator for one built from the changed config or the reloaded function, records the new version in
run.json (a batch column's generator is swapped in `Batches` too: calls that start after the swap use
it), and turns cells back into work: failed cells of chosen columns, or a column recomputed for
the rows that finished it. A swapped generator serves every cell that starts after the swap; a cell
running meanwhile finishes on the old one (its value says so: `<column>__version`). A cell the
response cache had already answered when a change arrived keeps that answer (and its old version).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from treadle.engine.column_edits import ColumnEdit, Versions, VersionStamped, stamp_first_version, unstamped
from treadle.engine.generators.base import Generator
from treadle.engine.generators.batch import BatchGenerator
from treadle.engine.generators.filter import ExpressionFilter, FunctionFilter
from treadle.engine.generators.llm import LLMGenerator
from treadle.engine.generators.python import PythonGenerator
from treadle.engine.generators.template import TemplateGenerator
from treadle.engine.pipeline import FilterColumn, LLMColumn, TemplateColumn
from treadle.engine.resume import RunRecord
from treadle.engine.run import Run
from treadle.engine.tracker import CellState

_REDOABLE = (CellState.DONE, CellState.DEGRADED, CellState.FAILED)
_IN_FLIGHT = (CellState.READY, CellState.RUNNING, CellState.RETRY_WAIT)


@dataclass(frozen=True)
class RecomputePlan:
    """What recomputing a column would run now."""

    cells: int
    """Cells of the column (rows where it finished and nothing after it is under way)."""
    calls: int
    """Model calls, counting the llm columns downstream that rerun with it."""


def function_source(function: Callable[..., Any], fallback: str) -> str:
    """A python column's function as text (for run.json's versions); `fallback` when it has none."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return fallback


def edited_generator(current: Generator, edit: ColumnEdit) -> Generator:
    """The generator of `edit`'s column built from its changed config (`current`: the one serving it now)."""
    config = edit.loaded.graph.nodes[edit.column].config
    if isinstance(config, LLMColumn):
        assert isinstance(current, LLMGenerator)
        llm = LLMGenerator(edit.column, config, current.client)
        llm.cache = current.cache
        return llm
    if isinstance(config, FilterColumn):
        body = config.expression_body()
        assert body is not None  # only an expression filter can be edited
        return ExpressionFilter(edit.column, body)
    assert isinstance(config, TemplateColumn)
    return TemplateGenerator(edit.column, config.template)


def reloaded_generator(current: Generator, function: Callable[..., Any]) -> Generator:
    """A python column's or filter's generator (batch or not) calling `function` instead (`current`: unstamped)."""
    if isinstance(current, BatchGenerator):
        return current.replaced(current.stamp, function)
    if isinstance(current, FunctionFilter):
        return FunctionFilter(current.name, function)
    return PythonGenerator(current.name, current.outputs, function)


class ColumnEditor:
    def __init__(self, run: Run, versions: Versions) -> None:
        self._run = run
        self.versions = versions
        self._nodes = {name: i for i, name in enumerate(run.node_names)}
        generators = run.scheduler.generators
        self._sources = {  # python columns' and filters' functions, batch or not
            g.name: function_source(function, g.name)
            for g in generators
            if (function := getattr(unstamped(g), "function", None)) is not None
        }
        for column in versions.columns():  # a resumed run: the changed columns stamp their version again
            self.swap(column, generators[self._nodes[column]], versions.of_column(column))

    def generator(self, column: str) -> Generator:
        return unstamped(self._run.scheduler.generators[self._nodes[column]])

    def swap(self, column: str, generator: Generator, version: int) -> None:
        """Serve `column`'s next cells from `generator`, its values stamped with `version`."""
        node = self._nodes[column]
        inner = unstamped(generator)
        new: Generator
        if isinstance(inner, BatchGenerator):  # batch calls split values themselves, and find it in Batches
            new = inner.replaced({f"{column}__version": version})
            self._run.scheduler.batches.nodes[node] = new
        else:
            new = VersionStamped(inner, version)
        self._run.scheduler.generators[node] = new

    # ---- changes (on the engine loop) ---------------------------------------------------------------

    def apply(self, edit: ColumnEdit) -> int:
        """Serve the column's next cells from the changed config; returns the new version."""
        new = edited_generator(self.generator(edit.column), edit)
        version = self.versions.add(edit.column, "edit", edit.changes, edit.loaded.source_hash)
        self._record()
        self.swap(edit.column, new, version)
        return version

    def reload(self, column: str, function: Callable[..., Any], pipeline_hash: str, source: bytes) -> int:
        """Serve the python column's (or filter's) next cells or batch calls from `function` (its module
        loaded again from `source`, the text of its file: what workers elsewhere load it from); returns
        the version."""
        reloaded = reloaded_generator(self.generator(column), function)
        old = self._sources.get(column, column)
        new = function_source(function, column)
        self._sources[column] = new
        version = self.versions.add(column, "reload", {"function": (old, new)}, pipeline_hash)
        self._record()
        self.swap(column, reloaded, version)
        return version

    def _record(self) -> None:
        """run.json with the versions so far (before the change applies: resume never misses one)."""
        record = RunRecord.read(self._run.directory.path)
        dataclasses.replace(record, versions=list(self.versions.history)).write(self._run.directory)

    def with_versions(self, summary: dict[str, Any]) -> dict[str, Any]:
        """summary.json's dict with the versions after the first (none: left as it is)."""
        if self.versions.history:
            summary["versions"] = [dict(entry) for entry in self.versions.history]
        return summary

    def finish(self) -> None:
        """Once the run has written its directory: version 1 into output.parquet for the changed columns'
        cells made before their first change, and the versions into summary.json."""
        run = self._run
        if not self.versions.history or not run.directory.output_path.exists():
            return
        tracker = run.tracker
        states = np.frombuffer(bytes(tracker.state), np.uint8).reshape(tracker.n_rows, tracker.n_nodes)
        kept = np.setdiff1d(np.arange(tracker.n_rows), sorted(tracker.dropped_rows()))  # output.parquet's rows
        made = {c: states[kept, self._nodes[c]] == CellState.DONE for c in self.versions.columns()}
        run.summary = self.with_versions(run.summary)
        try:  # the outputs are written: a stamp that cannot be added costs them nothing (run.json has the versions)
            stamp_first_version(run.directory.output_path, made)
            run.directory.write_summary(run.summary)
        except OSError as exc:
            print(f"treadle: warning: versions not written into {run.directory.path}: {exc}", file=sys.stderr)

    # ---- reruns (on the engine loop) ----------------------------------------------------------------

    def failed_cells(self, columns: Collection[str], rows: Sequence[int] | None) -> list[int]:
        """Failed cells of `columns`: in `rows`, or everywhere."""
        tracker = self._run.tracker
        n = tracker.n_nodes
        nodes = {self._nodes[c] for c in columns}
        if rows is None:
            return [cell for cell in tracker.cells_in(CellState.FAILED) if cell % n in nodes]
        return [row * n + node for row in rows if 0 <= row < tracker.n_rows for node in sorted(nodes)]

    def recompute_cells(self, column: str, rows: Sequence[int] | None = None) -> list[int]:
        """Cells of `column` to run again: finished (done, degraded or failed) in rows whose cells after it
        are none of them under way, in row groups started or finished."""
        tracker, groups = self._run.tracker, self._run.scheduler.row_groups
        n = tracker.n_nodes
        node = self._nodes[column]
        below = self._downstream(node)
        active = set(groups.in_flight())
        candidates = range(tracker.n_rows) if rows is None else [r for r in rows if 0 <= r < tracker.n_rows]
        cells = []
        for row in candidates:
            base = row * n
            group = row // tracker.group_size
            if tracker.state[base + node] not in _REDOABLE or not (group in active or groups.is_finished(group)):
                continue
            if any(tracker.state[base + d] in _IN_FLIGHT for d in below):
                continue
            cells.append(base + node)
        return cells

    def plan(self, column: str, cells: Sequence[int]) -> RecomputePlan:
        llm_nodes = [d for d in (self._nodes[column], *self._downstream(self._nodes[column])) if self._is_llm(d)]
        return RecomputePlan(len(cells), len(cells) * len(llm_nodes))

    def rerun(self, cells: list[int], redo: bool) -> int:
        """Turn `cells` back into work (failed ones; with `redo` finished ones too); returns how many."""
        if redo:
            self._reload_written_rows(cells)
        return self._run.scheduler.retry(cells, redo=redo)

    def _reload_written_rows(self, cells: Sequence[int]) -> None:
        """Rows of groups written and let go: their values back from the group files, for the rerun cells."""
        run = self._run
        size = run.tracker.group_size
        for group in sorted({run.tracker.group_of(cell) for cell in cells}):
            if group * size in run.store.rows:
                continue
            try:
                written = run.directory.read_group_rows(group)
            except FileNotFoundError:
                continue
            for row, values in written.items():
                run.store.restored.setdefault(row, {}).update(values)

    def _downstream(self, node: int) -> list[int]:
        tracker = self._run.tracker
        found: set[int] = set()
        frontier = list(tracker.downstream[node])
        while frontier:
            down = frontier.pop()
            if down not in found:
                found.add(down)
                frontier.extend(tracker.downstream[down])
        return sorted(found)

    def _is_llm(self, node: int) -> bool:
        return isinstance(unstamped(self._run.scheduler.generators[node]), LLMGenerator)
