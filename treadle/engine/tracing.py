"""Tracer: records every attempt of a cell (trace_schema.TaskTrace), keeps the newest for UIs and hands
them to the run's trace file (trace_writer.py). The hot path packs each attempt's numbers into one
bytearray; TaskTraces and Arrow tables are made only when read or written. `NullTracer` records nothing
(the scheduler checks once per finished cell, then packs a plain success's record itself)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path

import numpy as np
import pyarrow as pa

from treadle.engine.stats import Quantiles
from treadle.engine.trace_schema import TaskTrace, TraceStatus
from treadle.engine.trace_writer import HEAD, HEAD_DTYPE, Batch, Rest, compact, open_stream, trace_table

RING_SIZE = 20_000
_index = itemgetter(0)


class Tracer:
    """Records wait in `_heads` (and `_more`) until the writer takes them as a `Batch` (every quarter
    second); they stay there, the newest RING_SIZE taken at least, for UIs. While tracing, the run times
    of successful cells (`latencies`) come from the batches taken: one record per cell, not two."""

    def __init__(self, columns: Sequence[str], models: Sequence[str | None], t0: float) -> None:
        self.columns, self.models = list(columns), list(models)
        self.usage_keys = [f"{c}__usage" for c in columns]
        self.t0 = t0
        self.latencies = [Quantiles() for _ in columns]
        """Per node, the run times of successful attempts of cells, from the batches taken so far."""
        self._first_seq, self._taken = 1, 0
        """The seq of the oldest record held; records handed to the writer so far."""
        self._heads = bytearray()
        self._more: list[tuple[int, Rest]] = []
        """The rest of the records held that are not plain successes, by index in `_heads`."""
        self.record_plain, self.pack = self._heads.extend, HEAD.pack
        """`done` of an attempt whose values carry no usage: `record_plain(pack(row, node, attempt, slot,
        t_ready, t_start, t_end))`, for callers on the hot path."""
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None

    @property
    def seq(self) -> int:
        """The seq of the newest record (how many there are)."""
        return self._first_seq - 1 + len(self._heads) // HEAD.size

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
        rows: np.ndarray | None = None,
    ) -> None:
        """Any attempt; `rows`: those a batch call ran for (its one record, on its first row, has their count)."""
        rest: Rest = {"status": status, "error_class": None if error is None else type(error).__name__}
        rest.update(message=message, retry_after_s=retry_after, rows=None if rows is None else len(rows))
        if rows is not None:
            rest["call_rows"] = rows
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

    def held(self, newest: int | None = None) -> Batch:
        """The `newest` records held (by default the newest RING_SIZE taken and all not taken yet) as a
        batch. Cheap: call it on the engine loop, then `traces_of` it on any thread."""
        newest = RING_SIZE + self.seq - self._taken if newest is None else newest
        start = max(len(self._heads) // HEAD.size - newest, 0)
        more = self._more[bisect.bisect_left(self._more, start, key=_index) :]
        return Batch(
            self._first_seq + start, bytes(self._heads[start * HEAD.size :]), [(i - start, r) for i, r in more]
        )

    def traces_of(self, batch: Batch, where: np.ndarray | None = None) -> list[TaskTrace]:
        """TaskTraces of the records in a batch from `held` (or those `where` is true): any thread."""
        table = trace_table(batch, self.t0, self.columns, self.models)
        return [TaskTrace(**r) for r in (table if where is None else table.filter(where)).to_pylist()]

    def since(self, seq: int) -> list[TaskTrace]:
        """Traces still held that are newer than `seq`, oldest first (makes only those: UIs poll this)."""
        return self.traces_of(self.held(self.seq - seq))

    def recent_for(self, row: int, node: int) -> list[TaskTrace]:
        """The attempts of one cell still held, oldest first: a batch call's on every row it ran for."""
        batch = self.held()
        heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE)
        hits = (heads["row"] == row) & (heads["node"] == node)
        for index, rest in batch.more:
            if "call_rows" in rest and heads["node"][index] == node:
                hits[index] = row in rest["call_rows"]
        return self.traces_of(batch, hits)

    def take_unwritten(self) -> Batch:
        """The records not handed to the writer yet."""
        batch = self.held(self.seq - self._taken)
        self._taken += batch.count
        self._add_latencies(batch)
        drop = self._taken - self._first_seq + 1 - RING_SIZE
        if drop >= RING_SIZE:  # now and then, not on each take: the taken records beyond the ring
            del self._heads[: drop * HEAD.size]  # the same bytearray: record_plain is its bound extend
            more = self._more[bisect.bisect_left(self._more, drop, key=_index) :]
            self._first_seq, self._more = self._first_seq + drop, [(i - drop, r) for i, r in more]
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
            self._stream.write_table(trace_table(batch, self.t0, self.columns, self.models))

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
