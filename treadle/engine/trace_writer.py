"""Writing a run's trace: attempts as packed numbers (the hot path), made into Arrow tables and appended
to the session's stream (`trace.arrows`) on a thread of the run, folded into `trace.parquet` at its end.
A killed run leaves a readable prefix. A stream's schema carries an id, and trace.parquet lists those it
holds: a stream is never read twice, even if the run stopped between writing trace.parquet and removing it."""

from __future__ import annotations

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

from treadle.engine.trace_reader import PARQUET, SEGMENT_KEY, SEGMENTS_KEY, STREAM, TraceParts
from treadle.engine.trace_schema import SCHEMA

HEAD = struct.Struct("@4q3d8x")
"""The first 8 values of every record, packed (a batch of them is one bytes object): row, node, attempt,
slot, t_ready, t_start, t_end (perf_counter seconds), worker (packed as 0: a parent sets its workers')."""
HEAD_DTYPE = np.dtype([(name, np.int64) for name in ("row", "node", "attempt", "slot")] + [
    (name, np.float64) for name in ("t_ready", "t_start", "t_end")
] + [("worker", np.int64)])  # fmt: skip
Rest = dict[str, Any]
"""The other fields of an attempt that is not a plain success, by name: `status`, `error_class`, `message`,
`tokens_in`, `tokens_out`, `retry_after_s`, `rows`, `worker`; for a call from inside a cell also `column`,
`model`, `parent`."""


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

    def slice(self, start: int, stop: int | None = None) -> Batch:
        """The records from index `start` to `stop`, as a batch of their own."""
        stop = self.count if stop is None else min(stop, self.count)
        if start <= 0 and stop == self.count:
            return self
        more = [(index - start, rest) for index, rest in self.more if start <= index < stop]
        return Batch(self.first_seq + start, self.heads[start * HEAD.size : stop * HEAD.size], more)


def trace_table(batches: Sequence[Batch], t0: float, columns: Sequence[str], models: Sequence[str | None]) -> pa.Table:
    """The batches' records in the trace's schema: numpy and pyarrow over all of them, Python only for
    the few that are not plain successes (call it off the engine loop)."""
    heads = np.frombuffer(b"".join(batch.heads for batch in batches), dtype=HEAD_DTYPE)
    n, node = len(heads), heads["node"]
    starts = np.cumsum([0, *(batch.count for batch in batches)])
    more = [(start + i, rest) for start, batch in zip(starts[:-1], batches, strict=True) for i, rest in batch.more]
    seqs = [np.arange(batch.first_seq, batch.first_seq + batch.count, dtype=np.int64) for batch in batches]
    plain = {
        "seq": pa.array(np.concatenate([np.zeros(0, dtype=np.int64), *seqs])),
        **{name: pa.array(heads[name]) for name in ("row", "attempt", "slot", "worker")},
        **{name: pa.array(heads[name] - t0) for name in ("t_ready", "t_start", "t_end")},
        "column": pc.take(pa.array(columns, pa.string()), node),
        "model": pc.take(pa.array(models, pa.string()), node),
        "status": pa.repeat("done", n),
    }
    table = pa.table([plain.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA], schema=SCHEMA)
    if more:  # those records made again with their rest, put in their places
        where = [index for index, _ in more]
        records = table.take(where).to_pylist()
        for record, (_, rest) in zip(records, more, strict=True):
            record.update(rest)
        order = np.arange(n)
        order[where] = np.arange(n, n + len(where))
        table = pa.concat_tables([table, pa.Table.from_pylist(records, schema=SCHEMA)]).take(order)
    return table


_PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": [f.name for f in SCHEMA if f.type == pa.string()],
    "column_encoding": {
        f.name: "BYTE_STREAM_SPLIT" if f.type == pa.float64() else "DELTA_BINARY_PACKED"
        for f in SCHEMA
        if f.type != pa.string()
    },
}
"""About 16 bytes per attempt: a few distinct strings per column, numbers that change little from one
attempt to the next (seq, row, times)."""


ROW_GROUP_ROWS = 65_536
"""trace.parquet's row groups: readers go through it a row group at a time (a few MB)."""


def compact(run_dir: Path) -> None:
    """Fold the run's stream, if any, into trace.parquet (after earlier sessions) and remove it, a row
    group at a time: memory for one row group, not the whole trace."""
    if not (run_dir / STREAM).is_file():
        return
    tmp = run_dir / (PARQUET + ".tmp")
    parts = TraceParts(run_dir, batch_rows=ROW_GROUP_ROWS)
    batches = iter(parts)
    first = next(batches, None)  # the files are open: the ids of their streams are known
    metadata = {SEGMENTS_KEY: json.dumps(parts.segments)}
    with pq.ParquetWriter(tmp, SCHEMA.with_metadata(metadata), **_PARQUET_OPTIONS) as writer:
        waiting: list[pa.RecordBatch] = []
        for batch in itertools.chain([] if first is None else [first], batches):
            waiting.append(batch)
            if sum(len(b) for b in waiting) >= ROW_GROUP_ROWS:
                table = pa.Table.from_batches(waiting, SCHEMA)
                whole = len(table) // ROW_GROUP_ROWS * ROW_GROUP_ROWS
                writer.write_table(table.slice(0, whole), ROW_GROUP_ROWS)
                waiting = table.slice(whole).to_batches()
        if waiting:
            writer.write_table(pa.Table.from_batches(waiting, SCHEMA), ROW_GROUP_ROWS)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, run_dir / PARQUET)
    (run_dir / STREAM).unlink()


def open_stream(run_dir: Path) -> pa.ipc.RecordBatchStreamWriter:
    """A new session's stream, once an interrupted session's is folded into trace.parquet (a stream has
    one schema, at its start: each session writes its own). Unbuffered: each table reaches the file whole."""
    compact(run_dir)
    open(run_dir / STREAM, "wb").close()  # an error here names the file (pyarrow's would not say it that way)
    return pa.ipc.new_stream(str(run_dir / STREAM), SCHEMA.with_metadata({SEGMENT_KEY: uuid.uuid4().hex.encode()}))
