"""RunController: the one door between a user interface and a run.

The run lives on its own thread with its own event loop (engine_thread.py). Commands are handed to that loop with
`call_soon_threadsafe`, so they apply in the order given; `snapshot()` reads counters there too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from treadle.engine.analysis.cost import prices_of
from treadle.engine.analysis.summary import live_metrics
from treadle.engine.column_edits import (
    ColumnSettings,
    Versions,
    column_settings,
    prepare_edit,
    reloadable_function,
)
from treadle.engine.engine_thread import COMMAND_TIMEOUT_S, EngineThread
from treadle.engine.events import EventBus
from treadle.engine.functions import FunctionLoadError, module_source, reload_function, signature_problem
from treadle.engine.gc_tuning import GC_TUNING
from treadle.engine.limits import check_limit
from treadle.engine.live_edits import ColumnEditor, RecomputePlan
from treadle.engine.outputs import RunDirectory
from treadle.engine.pipeline_file import edit_pipeline_file
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.result import RunResult
from treadle.engine.resume import Recovery, RunRecord, descendants, pipeline_to_resume, recover
from treadle.engine.run import Run, RunOptions
from treadle.engine.run_dir import create_run_dir, new_run_dir
from treadle.engine.snapshots import CellReading, cell_detail, read_cell, run_snapshot
from treadle.engine.stats import LimitChanges
from treadle.engine.tracing import Batch, TaskTrace
from treadle.engine.tracker import CellState
from treadle.engine.views import CellDetail, LimitView, Snapshot, WorkerView

__all__ = ["CellDetail", "ColumnSettings", "LimitView", "RecomputePlan", "RunController", "Snapshot", "WorkerView"]

T = TypeVar("T")


class RunController:
    run_class: type[Run] = Run  # the run it drives (the workers' parent drives one of its own kind)

    def __init__(
        self,
        loaded: LoadedPipeline,
        options: RunOptions | None = None,
        *,
        recovery: Recovery | None = None,
        versions: Versions | None = None,
    ) -> None:
        """A new run of `loaded`; with `recovery` (see `resume`), the rest of an earlier one (at `versions`)."""
        self.loaded = loaded
        self.options = options or RunOptions()
        self.bus = EventBus()
        if recovery is None:
            self._directory = new_run_dir(loaded, self.options)
        else:
            assert self.options.out is not None
            self._directory = RunDirectory(self.options.out)
        # Building the run checks what only a run can (API keys): nothing is written before it passes.
        try:
            self._run = self.run_class(loaded, self.options, self.bus, self._directory, recovery)
        except BaseException:
            self._directory.release()
            raise
        self._limit_changes = LimitChanges({name: limit.total for name, limit in self._run.limits.items()})
        self._run.limit_changes = self._limit_changes
        if recovery is None:
            create_run_dir(self._directory, loaded, self.options)
        self._edits = ColumnEditor(self._run, versions or Versions())
        self._engine = EngineThread(self._run.execute, self._final_result)

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | Path,
        *,
        pipeline: LoadedPipeline | None = None,
        recompute: Collection[str] = (),
        options: RunOptions | None = None,
    ) -> RunController:
        """Continue an interrupted or failed run in its directory: finished cells are never run again.

        The pipeline is loaded again from where the run found it (or given), at the run's latest version
        (changes made while it went are applied again); if it changed otherwise, resume is refused unless
        `recompute` names the columns to redo (their dependents are redone too). `options`: how it goes on
        (hold_open, cache, workers, executor, ray_address); its directory, rows and max_parallel are the run's.
        """
        path = Path(run_dir)
        record = RunRecord.read(path)
        pipeline, versions = pipeline_to_resume(record, path, pipeline, recompute)
        rows = min(record.rows or record.seed_rows, record.seed_rows)
        size = pipeline.config.run.row_group_size
        recovery = recover(
            RunDirectory(path),
            list(pipeline.graph.order),
            {name: node.outputs for name, node in pipeline.graph.nodes.items()},
            n_groups=-(-rows // size),
            group_size=size,
            recompute=descendants(pipeline.graph.nodes, recompute),
        )
        options = dataclasses.replace(
            options or RunOptions(), out=path, rows=record.rows, max_parallel=record.max_parallel
        )
        from treadle.engine.workers import open_controller  # it imports this module: a cycle at the top

        return open_controller(pipeline, options, recovery=recovery, versions=versions)

    @property
    def run_dir(self):
        return self._directory.path

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> RunController:
        self._engine.start()
        return self

    def _final_result(self) -> RunResult:
        """On the engine thread once the run has ended."""
        self._edits.finish()
        return RunResult.from_run(self._run)

    def wait(self, timeout: float | None = None) -> RunResult | None:
        """The result once the run has finished; None if `timeout` passed first."""
        return self._engine.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._engine.finished

    @property
    def failed_to_run(self) -> bool:
        """The run ended in an error that `wait` raises (its workers could not start, say), not with a result."""
        return self._engine.failed

    def unsubscribe(self, subscriber) -> None:
        """Stop filling a queue `subscribe()` returned."""
        self.bus.unsubscribe(subscriber)

    def subscribe(self):
        """A thread-safe queue of every RunEvent from now on."""
        return self.bus.subscribe()

    def tuned_gc(self) -> AbstractContextManager[None]:
        """The engine's gc settings (engine/gc_tuning.py) for a UI in this process to hold while it runs;
        they go back when the last holder, UI or run, leaves."""
        return GC_TUNING.held()

    # ---- commands ----------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T | None:
        """Run `fn` on the engine loop and return its result; None once the run is over."""
        return self._engine.call(fn)

    def pause(self) -> None:
        self._call(self._run.scheduler.pause)

    def resume(self) -> None:
        self._call(self._run.scheduler.resume)

    def set_limit(self, name: str, total: int) -> None:
        """Resize a limit (`slots`, `row_groups`, `model:<name>`) while the run goes on."""
        if name not in self._run.limits:
            raise ValueError(f"unknown limit {name!r}; known: {', '.join(self._run.limits)}")
        check_limit(name, total)

        def set_limit() -> None:
            self._run.scheduler.set_limit(name, total)
            # Recorded here, on the engine loop, in the order changes apply: summary.json's limit_history.
            self._limit_changes.record(name, self.bus.elapsed(), total)

        self._call(set_limit)

    def set_budgets(self, model: str, rpm: int | None = None, tpm: int | None = None) -> None:
        """Set a model's requests and tokens per minute while the run goes on (None: no budget)."""
        key = f"model:{model}"
        if key not in self._run.rates:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(k[6:] for k in self._run.rates)}")
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None:
                check_limit(f"{model}.{name}", value)

        def set_budgets() -> None:
            self._run.rates[key].set_budgets(rpm, tpm)
            self._run.scheduler.pace_changed()

        self._call(set_budgets)

    def limits(self) -> dict[str, int]:
        return {name: limit.total for name, limit in self._run.limits.items()}

    def cell_id(self, row: int, column: str) -> int:
        return row * len(self._run.node_names) + self._run.node_names.index(column)

    def retry(
        self,
        cells: Iterable[tuple[int, str]] = (),
        rows: Iterable[int] = (),
        all_failed: bool = False,
        columns: Iterable[str] | None = None,
    ) -> int:
        """Turn failed cells back into work: given (row, column) pairs, whole rows, or every failed cell;
        with `columns`, only those columns' failed cells (in `rows`, or in every row). Their blocked
        dependents run again too; an llm cell asks its model again, not the response cache."""
        ids = [self.cell_id(row, column) for row, column in cells]
        chosen = list(rows)
        names = None if columns is None else self._known_columns(columns)
        if names is None:
            n = len(self._run.node_names)
            ids += [row * n + node for row in chosen for node in range(n)]

        def retry() -> int:
            if names is not None:
                ids.extend(self._edits.failed_cells(names, chosen or None))
            elif all_failed:
                ids.extend(self._run.tracker.cells_in(CellState.FAILED))
            return self._run.scheduler.retry(ids)

        return self._call(retry) or 0

    def _known_columns(self, columns: Iterable[str]) -> list[str]:
        names = list(columns)
        if unknown := [name for name in names if name not in self._run.node_names]:
            raise ValueError(f"no column named {', '.join(unknown)} (columns: {', '.join(self._run.node_names)})")
        return names

    # ---- fixing a column while the run goes (engine/column_edits.py, engine/live_edits.py) -----------

    def update_column(self, name: str, **changes: Any) -> int | None:
        """Change an llm column's prompt, system (or system_prompt), temperature or max_tokens, or a template
        column's template, for every cell of it not started yet. Checked as `treadle validate` would: a
        problem raises ValueError (one line) and nothing changes. Returns the new pipeline version (None:
        nothing differed, or the run is over)."""
        edit = prepare_edit(self.loaded, name, changes)
        if not edit.changes:
            return None
        version = self._call(lambda: self._edits.apply(edit))
        if version is not None:
            self.loaded = edit.loaded
        return version

    def column_settings(self, name: str) -> ColumnSettings:
        """A column as an editor shows it: kind, editable values, the fields it may read, its version."""
        return column_settings(self.loaded, name, self._edits.versions.of_column(name))

    def check_column(self, name: str, **changes: Any) -> str | None:
        """Why `update_column(name, **changes)` would be refused (one line), or None; nothing is applied."""
        try:
            prepare_edit(self.loaded, name, changes)
        except ValueError as exc:
            return str(exc)
        return None

    def reload_function(self, name: str) -> int | None:
        """Load a python column's or filter's function (batch or not) again from its module's file (a fresh
        module object); new starts (cells, batch calls) use it. An import error or a function that cannot
        take a row raises ValueError (one line), the old function stays. Returns the new version (None: run over)."""
        spec = reloadable_function(self.loaded, name)
        try:
            source = module_source(spec, self.loaded.base_dir)
            function = reload_function(spec, self.loaded.base_dir, source)
        except FunctionLoadError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if bad := signature_problem(function):
            raise ValueError(f"{name}: '{spec}' {bad}")
        pipeline_hash = self.loaded.source_hash
        return self._call(lambda: self._edits.reload(name, function, pipeline_hash, source))

    def recompute_plan(self, name: str, rows: Iterable[int] | None = None) -> RecomputePlan:
        """What `recompute` would run now: the column's cells and the model calls (its llm dependents' too)."""
        self._known_columns([name])
        chosen = None if rows is None else list(rows)
        plan = self._call(lambda: self._edits.plan(name, self._edits.recompute_cells(name, chosen)))
        return plan if plan is not None else RecomputePlan(0, 0)

    def recompute(self, name: str, rows: Iterable[int] | None = None) -> int:
        """Run a column again (with its dependents) for the rows that finished it (or those of `rows`),
        asking models again rather than the response cache; returns how many of its cells will run.
        Rows with a cell after it still under way are left out."""
        self._known_columns([name])
        chosen = None if rows is None else list(rows)
        return self._call(lambda: self._edits.rerun(self._edits.recompute_cells(name, chosen), redo=True)) or 0

    def versions(self) -> list[dict[str, Any]]:
        """The pipeline's versions after the first (as run.json records them)."""
        history = self._call(lambda: [dict(entry) for entry in self._edits.versions.history])
        return history if history is not None else list(self._edits.versions.history)

    def pipeline_file_edit(self, save: bool = False) -> str:
        """The diff of writing the changes made so far into the pipeline file, written too with `save`;
        ValueError (one line) for a pipeline built in Python or a file they cannot go into."""
        return edit_pipeline_file(self.loaded.path, self.versions(), save)

    def drop(self, rows: Iterable[int]) -> int:
        """Exclude rows from work and output."""
        selected = list(rows)
        return self._call(lambda: self._run.scheduler.drop(selected)) or 0

    def cancel(self) -> None:
        """Stop new starts; running cells may finish within the grace period, then are cancelled."""

        def cancel() -> None:
            self._run.stop()
            assert self._engine.loop is not None
            self._engine.loop.call_later(self.options.grace_s, self._run.scheduler.abort)

        self._call(cancel)

    def close(self) -> None:
        """End a run held open (RunOptions.hold_open): unfinished cells stay unfinished."""
        self._call(lambda: self._run.stop("closed"))

    def abort(self) -> None:
        """Cancel running cells now; what is done is still written."""

        def abort() -> None:
            self._run.stop()
            self._run.scheduler.abort()

        self._call(abort)

    # ---- snapshots ---------------------------------------------------------------------------------

    def snapshot(self, rows: Iterable[int] = ()) -> Snapshot:
        """Counts by state, limits in force and in use, recent events, and the states of `rows`."""
        wanted = list(rows)
        snap = self._call(lambda: self._snapshot(wanted))
        return snap if snap is not None else self._snapshot(wanted)

    def _snapshot(self, rows: list[int]) -> Snapshot:
        return run_snapshot(self._run, rows, self.finished)

    def traces(self, since: int = 0) -> tuple[int, list[TaskTrace]]:
        """Traces newer than the cursor `since` (from the ring buffer), and the new cursor."""

        def traces() -> tuple[int, list[TaskTrace]]:
            return self._run.tracer.seq, self._run.tracer.since(since)

        result = self._call(traces)
        return result if result is not None else traces()

    def summary(self) -> dict[str, Any]:
        """What summary.json would hold if the run ended now; once it has ended, what it holds.

        While the run goes, `metrics` come from the attempts still in the trace ring buffer (all of them
        for runs up to its size), computed here, in the caller's thread, not on the engine loop.
        """
        run = self._run
        if run.status in ("done", "failed", "interrupted"):  # writing the run directory: summary.json next
            self._engine.ended(COMMAND_TIMEOUT_S)

        def take() -> tuple[dict[str, Any], Batch, int]:
            return self._edits.with_versions(run.build_summary()), run.tracer.held(), run.tracer.seq

        taken = self._call(take)
        if taken is None:  # the run has ended
            return run.summary or run.build_summary()
        summary, held, attempts = taken
        if "metrics" not in summary:
            prices = prices_of(self.loaded.config.models)
            records = [trace._asdict() for trace in run.tracer.traces_of(held)]
            metrics = live_metrics(self.run_dir, summary, prices, records, attempts, self.bus.elapsed())
            summary["metrics"] = metrics.to_json()
        return summary

    def cell_detail(self, row: int, column: str) -> CellDetail:
        node = self._run.node_names.index(column)
        reading = self._call(lambda: read_cell(self._run, row, node))
        if reading is None:  # the run is over: its state read here
            reading = read_cell(self._run, row, node)
        if reading.values is None:
            reading = self._read_elsewhere(row, node, reading)
        return cell_detail(self.loaded, row, column, reading, reading.values or {})

    def _read_elsewhere(self, row: int, node: int, reading: CellReading) -> CellReading:
        """A cell whose row the run's store does not hold: its group was written and released, its row
        read back from the run directory."""
        group = row // self.loaded.config.run.row_group_size
        return reading._replace(values=self._directory.read_written_row(row, group) or {})

    def failures(self) -> list[dict[str, Any]]:
        """Failed cells now: row, column, error class, message, attempts (rows a filter dropped are not failures)."""

        def failures() -> list[dict[str, Any]]:
            return [f.record() for f in self._run.scheduler.failures.values() if f.action != "filtered"]

        result = self._call(failures)
        return result if result is not None else failures()
