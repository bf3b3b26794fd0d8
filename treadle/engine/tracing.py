"""The Tracer records every attempt of a cell (trace_schema.TaskTrace) as packed numbers (the hot path), keeps
the newest for UIs, and on a thread of the run appends them as Arrow tables to the session's stream (`trace.arrows`:
a killed run leaves a readable prefix), folded into `trace.parquet` at its end (`compact`). `NullTracer` records
nothing (the scheduler checks once per finished cell, then packs a plain success's record itself)."""

from __future__ import annotations

import bisect
import itertools
import json
import os
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from treadle.engine.stats import Quantiles
from treadle.engine.trace_reader import PARQUET, SEGMENT_KEY, SEGMENTS_KEY, STREAM, TraceParts
from treadle.engine.trace_schema import SCHEMA, TaskTrace, TraceStatus

HEAD_FIELDS = ("row", "node", "attempt", "slot", "t_ready", "t_start", "t_end")
HEAD = struct.Struct("@4q3d8x")
"""The first values of every record (HEAD_FIELDS; times in perf_counter seconds), packed: a batch's are one bytes;
then the worker, packed as 0 (a parent sets its workers')."""
HEAD_DTYPE = np.dtype([(name, np.float64 if name[:2] == "t_" else np.int64) for name in (*HEAD_FIELDS, "worker")])
Rest = dict[str, Any]
"""The other fields of an attempt that is not a plain success, by name: `status`, `error_class`, `message`,
`tokens_in`, `tokens_out`, `retry_after_s`, `rows`, `worker`, `call_rows` (the rows, not written); a ctx call's
also `column`, `model`, `parent`."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Records numbered from `first_seq` (the n-th record made has seq n): their heads one after another
    and, for the few that are not plain successes, their rest by index in the batch."""

    first_seq: int
    heads: bytes
    more: list[tuple[int, Rest]]

    @property
    def count(self) -> int:
        return len(self.heads) // HEAD.size


def trace_table(batch: Batch, t0: float, columns: Sequence[str], models: Sequence[str | None]) -> pa.Table:
    """The batch's records in the trace's schema: numpy and pyarrow over all of them, Python only for
    the few that are not plain successes (call it off the engine loop)."""
    heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE)
    n, node = len(heads), heads["node"]
    plain = {
        "seq": pa.array(np.arange(batch.first_seq, batch.first_seq + n, dtype=np.int64)),
        **{name: pa.array(heads[name]) for name in ("row", "attempt", "slot", "worker")},
        **{name: pa.array(heads[name] - t0) for name in ("t_ready", "t_start", "t_end")},
        "column": pc.take(pa.array(columns, pa.string()), node),
        "model": pc.take(pa.array(models, pa.string()), node),
        "status": pa.repeat("done", n),
    }
    table = pa.table([plain.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA], schema=SCHEMA)
    if batch.more:  # those records made again with their rest, put in their places
        where, rests = zip(*batch.more, strict=True)
        records = [{**record, **rest} for record, rest in zip(table.take(where).to_pylist(), rests, strict=True)]
        order = np.arange(n)
        order[list(where)] = np.arange(n, n + len(where))
        table = pa.concat_tables([table, pa.Table.from_pylist(records, schema=SCHEMA)]).take(order)
    return table


RING_SIZE = 20_000


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
        worker: int = 0,
    ) -> None:
        """Any attempt; `rows`: those a batch call ran for (its one record, on its first row, has their count)."""
        rest: Rest = {"status": status, "error_class": None if error is None else type(error).__name__}
        rest.update(message=message, retry_after_s=retry_after, call_rows=rows, worker=worker)
        rest["rows"] = None if rows is None else len(rows)
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
        more = self._more[bisect.bisect_left(self._more, start, key=lambda item: item[0]) :]
        heads = bytes(self._heads[start * HEAD.size :])
        return Batch(self._first_seq + start, heads, [(i - start, r) for i, r in more])

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
            if rest.get("call_rows") is not None and heads["node"][index] == node:
                hits[index] = row in rest["call_rows"]
        return self.traces_of(batch, hits)

    def take_unwritten(self) -> Batch:
        """The records not handed to the writer yet (the run times of the cells that succeeded: to `latencies`)."""
        batch = self.held(self.seq - self._taken)
        self._taken += batch.count
        heads = np.frombuffer(batch.heads, dtype=HEAD_DTYPE)
        cell_done = np.ones(len(heads), dtype=bool)
        for index, rest in batch.more:
            cell_done[index] = rest["status"] == "done" and "parent" not in rest
        for node, latencies in enumerate(self.latencies):
            latencies.frombytes((heads["t_end"] - heads["t_start"])[cell_done & (heads["node"] == node)].tobytes())
        drop = self._taken - self._first_seq + 1 - RING_SIZE
        if drop >= RING_SIZE:  # now and then, not on each take: the taken records beyond the ring
            kept = self.held(self.seq - self._first_seq + 1 - drop)
            del self._heads[: drop * HEAD.size]  # the same bytearray: record_plain is its bound extend
            self._first_seq, self._more = kept.first_seq, kept.more
        return batch

    def write(self, path: Path, batch: Batch) -> None:
        """Append a batch from take_unwritten to the run's trace at `path` (writer thread). The first call starts
        the session's own stream (unbuffered: each table reaches the file whole), an earlier one folded first."""
        if self._stream is None:
            compact(path.parent)
            open(path.parent / STREAM, "wb").close()  # an error here names the file (pyarrow's would not)
            metadata = {SEGMENT_KEY: uuid.uuid4().hex.encode()}
            self._stream = pa.ipc.new_stream(str(path.parent / STREAM), SCHEMA.with_metadata(metadata))
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

    def _nothing(self, *args: object, **kwargs: object) -> None: ...

    done = record = write = finish = _nothing


_ENCODINGS = {pa.float64(): "BYTE_STREAM_SPLIT", pa.int64(): "DELTA_BINARY_PACKED"}
_PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": [f.name for f in SCHEMA if f.type == pa.string()],
    "column_encoding": {f.name: _ENCODINGS[f.type] for f in SCHEMA if f.type in _ENCODINGS},
}
"""About 16 bytes per attempt: a few distinct strings per column, numbers that change little from one
attempt to the next (seq, row, times)."""


ROW_GROUP_ROWS = 65_536
"""trace.parquet's row groups: readers go through it a row group at a time (a few MB)."""


def compact(run_dir: Path) -> None:
    """Fold the run's stream, if any, into trace.parquet (after earlier sessions) and remove it, a row group at
    a time: memory for one row group, not the whole trace. A stream's schema carries an id, and trace.parquet
    lists those it holds: a stream is never read twice, even if the run stopped before removing it."""
    if not (run_dir / STREAM).is_file():
        return
    tmp = run_dir / (PARQUET + ".tmp")
    parts = TraceParts(run_dir, batch_rows=ROW_GROUP_ROWS)
    with pq.ParquetWriter(tmp, SCHEMA, **_PARQUET_OPTIONS) as writer:
        waiting: list[pa.RecordBatch] = []
        for batch in itertools.chain(parts, [None]):  # None: the end, what waits is written
            table = pa.Table.from_batches(waiting if batch is None else [*waiting, batch], SCHEMA)
            whole = len(table) if batch is None else len(table) // ROW_GROUP_ROWS * ROW_GROUP_ROWS
            if whole:
                writer.write_table(table.slice(0, whole), ROW_GROUP_ROWS)
            waiting = table.slice(whole).to_batches()
        writer.add_key_value_metadata({SEGMENTS_KEY: json.dumps(parts.segments)})
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, run_dir / PARQUET)
    (run_dir / STREAM).unlink()
