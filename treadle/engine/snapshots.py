"""A run read for its user interfaces: a snapshot of its counts, limits and rows in view, and one cell in
detail (the records they fill: views.py). The reads of live state run on the engine loop (the controller
hands them there); the rest in the caller's thread."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from treadle.engine.column_edits import ancestors
from treadle.engine.filters import cell_filtered
from treadle.engine.pipeline import PythonColumn
from treadle.engine.pipeline_validation import LoadedPipeline
from treadle.engine.run import Run
from treadle.engine.tracing import TaskTrace
from treadle.engine.tracker import N_STATES, CellState
from treadle.engine.views import CellDetail, LimitView, Snapshot


def run_snapshot(run: Run, rows: list[int], finished: bool) -> Snapshot:
    """Counts by state, limits in force and in use, recent events, and the states of `rows` (`finished`:
    the run has ended, its elapsed time is its wall time)."""
    tracker = run.tracker
    counts = list(tracker.counts)
    names = tuple(run.node_names)
    by_column = {name: {s.label: counts[i * N_STATES + s] for s in CellState} for i, name in enumerate(names)}
    totals = {s.label: sum(col[s.label] for col in by_column.values()) for s in CellState}
    finished_groups, in_flight, pending = run.scheduler.row_groups.counts()
    labels = [s.label for s in CellState]
    window = {row: tuple(labels[s] for s in tracker.row_states(row)) for row in rows if 0 <= row < tracker.n_rows}
    if hits := run.scheduler.cache_hits:  # a cell answered by the response cache shows as `cached`
        n_nodes = tracker.n_nodes
        for row, states in window.items():
            marked = (s if s != "done" or not hits[row * n_nodes + i] else "cached" for i, s in enumerate(states))
            window[row] = tuple(marked)
    if (filtered_by := tracker.filtered_by) is not None:  # a row a filter took shows as `filtered`, not `dropped`
        for row in [row for row in window if filtered_by[row] >= 0]:
            window[row] = tuple("filtered" if s == "dropped" else s for s in window[row])
    cache = run.cache.stats if run.cache is not None else None
    now = time.perf_counter()
    return Snapshot(
        status=run.live_status(),
        message=run.message or run.scheduler.pause_reason,
        loop_lag_ms=run.loop_lag.summary_ms(max_age_s=1.0),
        elapsed_s=run.bus.elapsed() if not finished else run.wall_s,
        rows=tracker.n_rows,
        columns=names,
        cells=totals,
        by_column=by_column,
        row_groups={"finished": finished_groups, "in_flight": in_flight, "pending": pending},
        limits={n: LimitView(lim.total, lim.in_use, lim.peak) for n, lim in run.limits.items()},
        recent_events=run.bus.recent(),
        window=window,
        rates={name: rate.view(now) for name, rate in run.rates.items()},
        cache={} if cache is None else {"hits": cache.hits, "misses": cache.misses},
        filtered=tracker.n_filtered,
    )


class CellReading(NamedTuple):
    """A cell as the engine loop holds it."""

    state: str
    error: dict[str, Any] | None
    values: dict[str, Any] | None
    """Its row's values; None once its group was written and released (then read from the run directory)."""
    attempts: list[TaskTrace]


def read_cell(run: Run, row: int, node: int) -> CellReading:
    """A cell's state, failure, row values and recent attempts."""
    cell = row * len(run.node_names) + node
    state = CellState(run.tracker.state[cell]).label
    failure = run.scheduler.failures.get(cell) or cell_filtered(run.tracker, cell, run.node_names)
    values, attempts = run.store.row(row), run.tracer.recent_for(row, node)
    return CellReading(
        state, None if failure is None else vars(failure).copy(), dict(values) if values else None, attempts
    )


def cell_detail(
    loaded: LoadedPipeline, row: int, column: str, reading: CellReading, values: dict[str, Any]
) -> CellDetail:
    """One cell as a person inspects it, from its reading and its row's `values`."""
    graph_node = loaded.graph.nodes[column]
    outputs = graph_node.outputs
    value = None
    if reading.state == "done":
        value = values.get(outputs[0]) if outputs == (column,) else {c: values.get(c) for c in outputs}
    if isinstance(graph_node.config, PythonColumn):
        # A python function receives the row as it was: seed fields and its ancestors' columns.
        graph = loaded.graph
        seen = set(loaded.seed.fields) | {c for n in ancestors(graph, column) for c in graph.nodes[n].outputs}
        names = [k for k in values if k in seen or k.split("__", 1)[0] in seen]
    else:
        names = list(graph_node.inputs)
    inputs = {name: values.get(name) for name in names}
    return CellDetail(row, column, reading.state, value, reading.error, reading.attempts, inputs)
