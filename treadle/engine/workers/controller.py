"""The controller of a run on several worker processes or Ray actors: RunController's door onto
ParentRun, with the counts and windows merged from what the workers report."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Iterable

from treadle.engine.column_edits import Versions
from treadle.engine.engine_thread import COMMAND_TIMEOUT_S
from treadle.engine.limits import ROW_GROUPS, check_limit, model_limit
from treadle.engine.live_edits import RecomputePlan
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.resume import Recovery
from treadle.engine.run import RunOptions
from treadle.engine.snapshots import CellReading
from treadle.engine.tracker import N_STATES, CellState
from treadle.engine.views import LimitView, Snapshot
from treadle.engine.workers.edits import RoutedEditor
from treadle.engine.workers.parent import ParentRun
from treadle.engine.workers.steering import RoutedCellCommands


class WorkersController(RoutedCellCommands):
    """The controller of a run on several worker processes (`--workers N`): the same door as one
    process. Retry and drop go to the worker holding (or having written) the row's group (steering.py);
    column edits and reloads to every worker, recompute group by group (edits.py)."""

    run_class = ParentRun
    _run: ParentRun
    _edits: RoutedEditor

    def __init__(
        self,
        loaded: LoadedPipeline,
        options: RunOptions | None = None,
        *,
        recovery: Recovery | None = None,
        versions: Versions | None = None,
    ) -> None:
        super().__init__(loaded, options, recovery=recovery, versions=versions)
        self._edits = RoutedEditor(self._run, self._edits.versions)

    @property
    def workers(self) -> int:
        return self._run.n_workers

    def pause(self) -> None:
        self._call(self._run.pause)

    def resume(self) -> None:
        self._call(self._run.resume)

    def set_limit(self, name: str, total: int) -> None:
        if name not in self._run.limits:
            raise ValueError(f"unknown limit {name!r}; known: {', '.join(self._run.limits)}")
        check_limit(name, total)

        def set_limit() -> None:
            self._run.set_limit(name, total)
            self._limit_changes.record(name, self.bus.elapsed(), total)

        self._call(set_limit)

    def set_budgets(self, model: str, rpm: int | None = None, tpm: int | None = None) -> None:
        if model_limit(model) not in self._run.rates:
            raise ValueError(f"unknown model {model!r}; known: {', '.join(k[6:] for k in self._run.rates)}")
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None:
                check_limit(f"{model}.{name}", value)
        self._call(lambda: self._run.set_budgets(model, rpm, tpm))

    def cancel(self) -> None:
        def cancel() -> None:
            self._run.stop()
            assert self._engine.loop is not None
            self._engine.loop.call_later(self.options.grace_s, self._run.abort)

        self._call(cancel)

    def close(self) -> None:
        self._call(lambda: self._run.stop("closed"))

    def abort(self) -> None:
        self._call(self._run.abort)

    # Column edits and function reloads: RunController's, through RoutedEditor (it sends each to the workers).

    def recompute_plan(self, name: str, rows: Iterable[int] | None = None) -> RecomputePlan:
        """As for one process, the cells counted over the workers."""
        self._known_columns([name])
        chosen = None if rows is None else list(rows)
        cells = self._counted(self._call(lambda: self._edits.recompute(name, chosen, dry_run=True)))
        return self._edits.plan(name, range(cells))

    def recompute(self, name: str, rows: Iterable[int] | None = None) -> int:
        """As for one process: each group's cells rerun by the worker holding (or having written) it."""
        self._known_columns([name])
        chosen = None if rows is None else list(rows)
        return self._counted(self._call(lambda: self._edits.recompute(name, chosen, dry_run=False)))

    def _read_elsewhere(self, row: int, node: int, reading: CellReading) -> CellReading:
        """A cell of a group a worker holds: as that worker reads it (the parent has its row only once the
        group is written), with the attempts the parent has merged."""
        asked = self._call(lambda: self._run.commands.read_cell(row, node))
        if asked is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                held = asked.result(COMMAND_TIMEOUT_S)
                if held is not None and held.values is not None:
                    return held._replace(attempts=reading.attempts)
        return super()._read_elsewhere(row, node, reading)

    def _snapshot(self, rows: list[int]) -> Snapshot:
        run = self._run
        snapshot = super()._snapshot(rows)
        counts = run.merged_counts.cells().reshape(-1, N_STATES)
        by_column = {name: {s.label: int(counts[i, s]) for s in CellState} for i, name in enumerate(snapshot.columns)}
        # A worker holds one group beyond its share so it never idles: that one waits, as the parent's do.
        held, in_flight = sum(len(h.outstanding) for h in run.workers if h.alive), run.shared_limits.in_use(ROW_GROUPS)
        pending = len(run.pending) + max(held - in_flight, 0)
        return dataclasses.replace(
            snapshot,
            cells={s.label: int(counts[:, s].sum()) for s in CellState},
            by_column=by_column,
            row_groups={"finished": run.written, "in_flight": in_flight, "pending": pending},
            limits={n: LimitView(lim.total, run.shared_limits.in_use(n), lim.peak) for n, lim in run.limits.items()},
            workers=run.commands.views(),
            window=self._held_window(snapshot.window),
        )

    def _held_window(self, window: dict[int, tuple[str, ...]]) -> dict[int, tuple[str, ...]]:
        """Rows in view whose group a worker holds: their states as it last reported them."""
        labels = [s.label for s in CellState]
        held = self._run.commands.held_row_states(window)
        return {row: tuple(labels[s] for s in held[row]) if row in held else states for row, states in window.items()}
