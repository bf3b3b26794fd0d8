"""Each worker of a run on several engine processes (`--workers N`, Ray): its attempts, model calls and
cells in flight, from the trace's `worker` field (`treadle report` shows them). A run in one process
(every `worker` 0, or an older trace without the field) has none: its report stays as it was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from treadle.engine.analysis.series import MAX_SERIES_POINTS, step_series
from treadle.engine.trace_reader import TraceChunks, TraceParts, trace_path
from treadle.engine.trace_schema import SCHEMA

_READ = ["seq", "worker", "slot", "t_start", "t_end", "model", "parent", "status"]


@dataclass(frozen=True)
class WorkerUse:
    """One worker's share of a run; times are the run's (sessions laid end to end, as the metrics')."""

    worker: int
    attempts: int
    """Attempts of cells (a batch call is one), not calls made from inside a cell (ctx)."""
    calls: int
    """Model requests: llm attempts and ctx calls (answers from the response cache not counted)."""
    calls_per_s: float
    """`calls` over the run's wall time (the workers' add up to the run's)."""
    slots: int
    """The execution slot lanes its cells ran on."""
    busy_s: float
    """Its cells' run time, summed."""
    mean_in_flight: float
    peak_in_flight: int
    in_flight_t: list[float]
    in_flight_v: list[int]
    """Its cells in flight over time: a step series (`v[i]` holds from `t[i]`), peaks kept."""


def measure_workers(run_dir: Path, wall_s: float, max_points: int = MAX_SERIES_POINTS) -> list[WorkerUse]:
    """Each worker's use of the run in `run_dir`, in worker order; none for a run in one process.
    `wall_s`: the run's wall time (the metrics')."""
    run_dir = Path(run_dir)
    if not trace_path(run_dir).exists():
        return []
    workers = [batch["worker"] for batch in TraceParts(run_dir, ["worker"])]
    if not pc.any(pc.greater(pa.chunked_array(workers, pa.int64()), 0)).as_py():  # read one column first
        return []
    table = pa.Table.from_batches(TraceParts(run_dir, _READ), SCHEMA).select(_READ)
    seq = table["seq"].to_numpy()
    session = np.cumsum(np.append(True, seq[1:] <= seq[:-1]))[: len(seq)] - 1  # a resume starts again at 1
    session_starts = np.array(TraceChunks(run_dir).session_starts or [0.0])  # as the metrics lay them
    shift = session_starts[np.minimum(session, len(session_starts) - 1)]
    starts, ends = table["t_start"].to_numpy() + shift, table["t_end"].to_numpy() + shift
    worker, slot = (pc.fill_null(table[name], 0).to_numpy() for name in ("worker", "slot"))
    cell = pc.is_null(table["parent"]).to_numpy(zero_copy_only=False)
    called = pc.and_kleene(pc.is_valid(table["model"]), pc.not_equal(table["status"], "cached"))
    called = pc.fill_null(called, False).to_numpy(zero_copy_only=False)
    found = []
    for w in np.unique(worker).tolist():
        cells = (worker == w) & cell
        times, values, peak, _ = step_series(starts[cells], ends[cells], max_points)
        busy, calls = float((ends[cells] - starts[cells]).sum()), int((called & (worker == w)).sum())
        found.append(
            WorkerUse(
                worker=w,
                attempts=int(cells.sum()),
                calls=calls,
                calls_per_s=calls / wall_s if wall_s > 0 else 0.0,
                slots=len(np.unique(slot[cells])),
                busy_s=busy,
                mean_in_flight=busy / wall_s if wall_s > 0 else 0.0,
                peak_in_flight=peak,
                in_flight_t=times,
                in_flight_v=values,
            )
        )
    return found
