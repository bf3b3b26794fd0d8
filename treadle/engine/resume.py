"""Resuming a run: the run record (run.json) and what a run directory says is already finished.

Finished cells come from the row-group files (their `__states` column) and the journal; a finished
cell is never run again. A group whose every cell is done keeps its file as it is. A finished run's
directory (compacted: cells.parquet and output.parquet) is expanded back to group files first.
Dropped rows stay dropped, and those a filter took stay filtered (the journal names the filter; a
compacted run's journal does not, its failures.jsonl does); the failures.jsonl lines of rows that stay
dropped (action `filtered` or `skip_row`) are kept for the next one. A row whose filter (or whose
column that skipped it) is recomputed is not dropped: it runs again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from treadle.engine.column_edits import Versions, apply_edits
from treadle.engine.errors import ConfigError, Problem
from treadle.engine.filters import filtered_failure
from treadle.engine.journal import replay
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline_loading import load_pipeline
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.policy import CellFailure
from treadle.engine.rows import RowStore
from treadle.engine.tracker import CellState, CellTracker

_DONE = CellState.DONE


@dataclass(frozen=True)
class RunRecord:
    """What run.json holds: enough to find the pipeline again and to tell whether it changed."""

    name: str
    pipeline: str | None
    source_hash: str
    columns: list[str]
    seed_rows: int
    rows: int | None
    max_parallel: int | None
    started_at: str = field(default_factory=lambda: dt.datetime.now().isoformat(timespec="seconds"))
    versions: list[dict[str, Any]] = field(default_factory=list)
    """Changes made while the run went (treadle.engine.column_edits.Versions): resume applies them."""

    def write(self, directory: RunDirectory) -> None:
        tmp = directory.record_path.with_name("run.json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, directory.record_path)

    @classmethod
    def read(cls, run_dir: Path) -> RunRecord:
        path = run_dir / "run.json"
        if not run_dir.is_dir():
            raise ConfigError([Problem(str(run_dir), "no such run directory")])
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError([Problem(str(run_dir), "not a treadle run directory (no run.json)")]) from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError([Problem(str(path), f"unreadable run record: {exc}")]) from None


def pipeline_to_resume(
    record: RunRecord, run_dir: Path, pipeline: LoadedPipeline | None, recompute: Collection[str]
) -> tuple[LoadedPipeline, Versions]:
    """The pipeline a resume runs, at the run's latest version, and its versions so far.

    Loaded again from where the run found it (or given). If the file is as the run started it, the
    changes made while the run went are applied again; if it was saved with them, it is taken as it is.
    Any other change is refused unless `recompute` names the columns to redo.
    """
    where = str(run_dir / "run.json")
    if pipeline is None:
        if record.pipeline is None:
            raise ConfigError([Problem(where, "this run's pipeline was built in Python: pass it to resume")])
        pipeline = load_pipeline(record.pipeline)
    unknown = [name for name in recompute if name not in pipeline.graph.nodes]
    if unknown:
        known = ", ".join(pipeline.graph.order)
        raise ConfigError([Problem("--recompute", f"no column named {', '.join(unknown)} (columns: {known})")])
    versions = Versions(list(record.versions))
    latest = versions.history[-1]["source_hash"] if versions.history else record.source_hash
    if pipeline.source_hash == record.source_hash and versions.history:
        try:
            pipeline = apply_edits(pipeline, versions.history)
        except ValueError as exc:
            raise ConfigError([Problem(where, f"cannot apply this run's recorded changes again: {exc}")]) from None
    elif pipeline.source_hash not in (record.source_hash, latest) and not recompute:
        raise ConfigError(
            [
                Problem(
                    where,
                    f"the pipeline {record.pipeline or ''} changed since this run started; pass --recompute "
                    "with the columns to redo (their dependents are redone too)",
                )
            ]
        )
    rows = len(pipeline.seed.frame)
    if rows != record.seed_rows:
        raise ConfigError([Problem(where, f"the seed changed: it has {rows} rows, the run had {record.seed_rows}")])
    return pipeline, versions


@dataclass
class Recovery:
    finished_groups: set[int] = field(default_factory=set)
    """Groups whose file already holds every cell done: not run, not rewritten."""
    done: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """For the other groups: row -> column -> that column's values."""
    dropped: set[int] = field(default_factory=set)
    filtered: dict[int, str] = field(default_factory=dict)
    """Dropped rows a filter took -> the filter's column."""
    failures: list[CellFailure] = field(default_factory=list)
    """The failures of rows that stay dropped (filtered, or skipped by a column's on_failure)."""

    def failures_by_cell(self, node_names: Sequence[str], n_rows: int) -> dict[int, CellFailure]:
        """`failures` by cell (row * nodes + node), leaving out those of columns or rows not in this run, and
        the filtered ones: the tracker keeps those (the run filters the rows again)."""
        index = {name: i for i, name in enumerate(node_names)}
        return {
            f.row * len(node_names) + index[f.column]: f
            for f in self.failures
            if f.column in index and f.row < n_rows and f.action != "filtered"
        }

    def restore(self, tracker: CellTracker, store: RowStore, node_names: Sequence[str]) -> set[int]:
        """Mark the cells the earlier attempt finished as done (their values kept in `store`), and its
        dropped and filtered rows so again; returns the groups needing no work."""
        n = tracker.n_nodes
        index = {name: i for i, name in enumerate(node_names)}
        finished = {g for g in self.finished_groups if g < tracker.n_groups}
        for group in finished:
            rows = tracker.group_rows(group)
            for cell in range(rows.start * n, rows.stop * n):
                tracker.restore_done(cell)
        for row, columns in self.done.items():
            if row >= tracker.n_rows or tracker.group_of(row * n) in finished:
                continue
            for name, values in columns.items():
                tracker.restore_done(row * n + index[name])
                store.restored.setdefault(row, {}).update(values)
        for row in self.dropped:
            if row >= tracker.n_rows:
                continue
            if self.filtered.get(row) in index:  # counted as filtered again, not as dropped
                tracker.filter_row(row, index[self.filtered[row]])
            else:
                tracker.drop_row(row)
        return finished


def descendants(graph_nodes: dict[str, Any], names: Collection[str]) -> set[str]:
    """The named columns and every column downstream of them."""
    result: set[str] = set()
    frontier = list(names)
    while frontier:
        name = frontier.pop()
        if name not in result:
            result.add(name)
            frontier.extend(graph_nodes[name].downstream)
    return result


def recover(
    directory: RunDirectory,
    node_names: Sequence[str],
    outputs: dict[str, tuple[str, ...]],
    n_groups: int,
    group_size: int,
    recompute: Collection[str] = (),
) -> Recovery:
    """Read what is finished; cells of `recompute` columns count as not done."""
    if directory.cells_path.exists():  # a finished run, compacted: its group files and journal again
        directory.expand()
    recovery = Recovery()
    keep = [name for name in node_names if name not in recompute]
    for group in range(n_groups):
        written = directory.read_group_states(group)
        if written is None:
            continue
        nodes, rows, states = written
        position = {name: i for i, name in enumerate(nodes)}
        complete = nodes == list(node_names) and not recompute and all(set(s) == {_DONE} for s in states)
        if complete:
            recovery.finished_groups.add(group)
            continue
        values = directory.read_group_rows(group)
        for row, row_states in zip(rows, states, strict=True):
            finished = {
                name: _values_of(values[row], outputs[name])
                for name in keep
                if name in position and row_states[position[name]] == _DONE
            }
            if finished:
                recovery.done[row] = finished
    # A complete group's file says it all: its rows' journal entries are not kept (a finished 1M-row
    # run's journal would otherwise be held whole, ~1 KB a row).
    complete_groups = recovery.finished_groups
    dropped: set[int] = set()
    filtered: dict[int, str] = {}
    for path in directory.journal_paths():  # a run with several worker processes has one journal each
        journal = replay(path, skip_row=lambda row: row // group_size in complete_groups)
        dropped |= journal.dropped
        filtered.update(journal.filtered)
        for row, columns in journal.done.items():
            for name, column_values in columns.items():
                if name in outputs and name not in recompute:
                    recovery.done.setdefault(row, {})[name] = column_values
    _recover_dropped(recovery, directory, dropped, filtered, recompute)
    return recovery


def _recover_dropped(
    recovery: Recovery, directory: RunDirectory, dropped: set[int], filtered: dict[int, str], recompute: Collection[str]
) -> None:
    """The dropped rows, those a filter took, and their failures (failures.jsonl's lines, or made again
    from the journal for a run killed before it wrote them); rows whose outcome is recomputed run again."""
    kept = {(f.row, f.column): f for f in _earlier_failures(directory.failures_path) if f.row in dropped}
    for row, column in filtered.items():
        kept.setdefault((row, column), filtered_failure(row, column))
    again = {row for row, column in kept if column in recompute}
    recovery.dropped = dropped - again
    recovery.failures = [f for key, f in sorted(kept.items()) if f.row not in again]
    recovery.filtered = {f.row: f.column for f in recovery.failures if f.action == "filtered"}


def _earlier_failures(path: Path) -> list[CellFailure]:
    """The lines of an earlier failures.jsonl that settled a row for good: filtered, or skip_row."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    failures = []
    for line in lines:
        try:
            record = json.loads(line)
            if record.get("action") in ("filtered", "skip_row"):
                failures.append(CellFailure(**record))
        except (json.JSONDecodeError, TypeError, AttributeError):  # a line treadle did not write
            continue
    return failures


def _values_of(row: dict[str, Any], outputs: tuple[str, ...]) -> dict[str, Any]:
    own = set(outputs)
    return {key: value for key, value in row.items() if key in own or key.split("__", 1)[0] in own}
