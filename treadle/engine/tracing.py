"""Tracer: records every attempt of a cell (trace_schema.TaskTrace), keeps the newest for UIs and hands
them to the run's trace file (trace_writer.py). The hot path packs each attempt's numbers into one
bytearray; TaskTraces and Arrow tables are made only when read or written. `NullTracer` records nothing
(the scheduler checks once per finished cell, then packs a plain success's record itself)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from treadle.engine.stats import Quantiles
from treadle.engine.trace_schema import TaskTrace, TraceStatus
from treadle.engine.trace_writer import HEAD, HEAD_DTYPE, Batch, Rest, compact, open_stream, trace_table

RING_SIZE = 20_000


class Tracer:
    """Records wait in `_heads` (and `_more`) until the writer takes them as a `Batch` (every quarter
    second); the newest batches stay, at least RING_SIZE records, for UIs. While tracing, the run times
    of successful cells (`latencies`) come from the batches taken: one record per cell, not two."""

    def __init__(self, columns: Sequence[str], models: Sequence[str | None], t0: float) -> None:
        self.columns, self.models = list(columns), list(models)
        self.usage_keys = [f"{c}__usage" for c in columns]
        self.t0 = t0
        self.latencies = [Quantiles() for _ in columns]
        """Per node, the run times of successful attempts of cells, from the batches taken so far."""
        self._taken = 0
        """Records handed to the writer so far: the newest kept has this seq."""
        self._kept: deque[Batch] = deque()
        self._kept_count = 0
        self._heads = bytearray()
        self._more: list[tuple[int, Rest]] = []
        """The rest of the records not taken yet that are not plain successes, by index in `_heads`."""
        self.record_plain, self.pack = self._heads.extend, HEAD.pack
        """`done` of an attempt whose values carry no usage: `record_plain(pack(row, node, attempt, slot,
        t_ready, t_start, t_end))`, for callers on the hot path."""
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None

    @property
    def seq(self) -> int:
        """The seq of the newest record (how many there are)."""
        return self._taken + len(self._heads) // HEAD.size

    def done(
        self, row: int, node: int, attempt: int, slot: int, t_ready: float, t_start: float, t_end: float, values: dict
    ) -> None:
        """A cell's attempt that succeeded."""
        if self.usage_keys[node] in values:
            self.record(row, node, attempt, slot, t_ready, t_start, t_end, "done", values=values)
        else:
            self.record_plain(HEAD.pack(row, node, attempt, slot, t_ready, t_start, t_end))

    def record(
        self,
        row: int,
        node: int,
        attempt: int,
        slot: int,
        t_ready: float,
        t_start: float,
        t_end: float,
        status: TraceStatus,
        error: BaseException | None = None,
        message: str | None = None,
        values: dict | None = None,
        child: tuple[str, dict | None] | None = None,
        retry_after: float | None = None,
        rows: int | None = None,
        worker: int = 0,
    ) -> None:
        """Any attempt; `rows`: the rows of a batch call (its one record, on its first row)."""
        rest: Rest = {"status": status, "error_class": None if error is None else type(error).__name__}
        rest.update(message=message, retry_after_s=retry_after, rows=rows, worker=worker)
        if child is not None:
            column = self.columns[node]
            (rest["model"], usage), rest["column"], rest["parent"] = child, f"{column}:llm", column
        else:
            usage = None if values is None else values.get(self.usage_keys[node])
        usage = usage if isinstance(usage, dict) else {}
        for key, name in (("prompt_tokens", "tokens_in"), ("completion_tokens", "tokens_out")):
            rest[name] = None if usage.get(key) is None else int(usage[key])
        self._more.append((len(self._heads) // HEAD.size, rest))
        self._heads.extend(HEAD.pack(row, node, attempt, slot, t_ready, t_start, t_end))

    def held(self, newest: int | None = None) -> list[Batch]:
        """The `newest` records held (by default the newest RING_SIZE taken and all not taken yet) as
        batches, oldest first. Cheap: call it on the engine loop, then `traces_of` them on any thread."""
        pending = Batch(self._taken + 1, bytes(self._heads), list(self._more))
        newest = min(self._kept_count, RING_SIZE) + pending.count if newest is None else newest
        newest_first: list[Batch] = []
        for batch in itertools.chain([pending], reversed(self._kept)):
            if newest <= 0:
                break
            newest_first.append(batch.slice(max(batch.count - newest, 0)))
            newest -= batch.count
        return newest_first[::-1]

    def traces_of(self, batches: Sequence[Batch]) -> list[TaskTrace]:
        """TaskTraces of the records in batches from `held` (reads nothing that changes: any thread)."""
        return [TaskTrace(**r) for r in trace_table(batches, self.t0, self.columns, self.models).to_pylist()]

    def since(self, seq: int) -> list[TaskTrace]:
        """Traces still held that are newer than `seq`, oldest first (makes only those: UIs poll this)."""
        return self.traces_of(self.held(self.seq - seq))

    def recent_for(self, row: int, node: int) -> list[TaskTrace]:
        """The attempts of one cell still held, oldest first."""
        found: list[Batch] = []
        for batch in self.held():
            heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE)
            hits = np.flatnonzero((heads["row"] == row) & (heads["node"] == node)).tolist()
            found += [batch.slice(i, i + 1) for i in hits]
        return self.traces_of(found)

    def take_unwritten(self) -> Batch:
        """The records not handed to the writer yet."""
        batch = Batch(self._taken + 1, bytes(self._heads), self._more)
        self._heads.clear()  # the same bytearray: record_plain is its bound extend
        self._more = []
        self._taken += batch.count
        if batch.count:
            self._kept.append(batch)
            self._kept_count += batch.count
            while self._kept_count - self._kept[0].count >= RING_SIZE:
                self._kept_count -= self._kept.popleft().count
            self._add_latencies(batch)
        return batch

    def _add_latencies(self, batch: Batch) -> None:
        heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE)
        ran = heads["t_end"] - heads["t_start"]
        cell_done = np.ones(len(heads), dtype=bool)
        for index, rest in batch.more:
            cell_done[index] = rest["status"] == "done" and "parent" not in rest
        for node, latencies in enumerate(self.latencies):
            latencies.frombytes(ran[cell_done & (heads["node"] == node)].tobytes())

    def write(self, path: Path, batch: Batch) -> None:
        """Append a batch from take_unwritten to the trace at `path` (the run's trace_path) from the
        writer thread; the first call starts this session's stream."""
        if self._stream is None:
            self._stream = open_stream(path.parent)
        if batch.count:
            self._stream.write_table(trace_table([batch], self.t0, self.columns, self.models))

    def finish(self, path: Path) -> None:
        """Write what is left and fold the run's trace into trace.parquet (writer thread, end of a run)."""
        try:
            self.write(path, self.take_unwritten())
        finally:
            stream, self._stream = self._stream, None
            if stream is not None:
                stream.close()
        compact(path.parent)


class NullTracer(Tracer):
    """Tracing off: records and writes nothing."""

    def _nothing(self, *args: object, **kwargs: object) -> None:
        return None

    done = record = write = finish = _nothing
