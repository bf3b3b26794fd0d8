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

HEAD = struct.Struct("@4q3d")
"""The first 7 values of every record, packed (a batch of them is one bytes object): row, node, attempt,
slot, t_ready, t_start, t_end (perf_counter seconds)."""
HEAD_DTYPE = np.dtype([(name, np.int64) for name in ("row", "node", "attempt", "slot")] + [
    (name, np.float64) for name in ("t_ready", "t_start", "t_end")
])  # fmt: skip
Rest = dict[str, Any]
"""The other fields of an attempt that is not a plain success, by name: `status`, `error_class`, `message`,
`tokens_in`, `tokens_out`, `retry_after_s`, `rows`; for a call from inside a cell also `column`, `model`, `parent`."""


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
        **{name: pa.array(heads[name]) for name in ("row", "attempt", "slot")},
        **{name: pa.array(heads[name] - t0) for name in ("t_ready", "t_start", "t_end")},
        "column": pc.take(pa.array(columns, pa.string()), node),
        "model": pc.take(pa.array(models, pa.string()), node),
        "status": pa.repeat("done", n),
    }
    table = pa.table([plain.get(f.name, pa.nulls(n, f.type)) for f in SCHEMA], schema=SCHEMA)
    if batch.more:  # those records made again with their rest, put in their places
        where = [index for index, _ in batch.more]
        records = table.take(where).to_pylist()
        for record, (_, rest) in zip(records, batch.more, strict=True):
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
    first = list(itertools.islice(batches, 1))  # the files are open: the ids of their streams are known
    metadata = {SEGMENTS_KEY: json.dumps(parts.segments)}
    with pq.ParquetWriter(tmp, SCHEMA.with_metadata(metadata), **_PARQUET_OPTIONS) as writer:
        waiting: list[pa.RecordBatch] = []
        for batch in itertools.chain(first, batches, [None]):  # None: the end, what waits is written
            table = pa.Table.from_batches(waiting if batch is None else [*waiting, batch], SCHEMA)
            whole = len(table) if batch is None else len(table) // ROW_GROUP_ROWS * ROW_GROUP_ROWS
            if whole:
                writer.write_table(table.slice(0, whole), ROW_GROUP_ROWS)
            waiting = table.slice(whole).to_batches()
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
