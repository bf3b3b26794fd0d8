"""Reading a run's trace: record by record as dicts (`TraceReader`), as one array per field
(`read_trace` -> `TraceColumns`) for metrics and exports, or as an Arrow table (`read_table`).

A run's trace is trace.parquet once the run has ended; while it goes (or after it was killed), the
stream its session appends to (trace.arrows; a torn last batch is left out), after the trace.parquet
of earlier sessions. Sessions of a resumed run (`seq` starts again at 1, times at 0) are laid end to
end here, each offset by the previous sessions' span, so series stay monotonic."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from treadle.engine.trace_schema import SCHEMA

PARQUET, STREAM = "trace.parquet", "trace.arrows"
SEGMENT_KEY = b"treadle.segment"
"""In a stream's schema metadata: its id."""
SEGMENTS_KEY = b"treadle.segments"
"""In trace.parquet's metadata: the ids of the streams folded into it (a JSON list)."""
STRING_FIELDS = ("column", "model", "parent", "status", "error_class")


def trace_path(run_dir: Path) -> Path:
    """The file of a run's trace (trace.parquet once the run has ended, the stream while it goes), or
    trace.parquet if there is none. The readers here take it or the run directory, and read every part."""
    stream = Path(run_dir) / STREAM
    return stream if stream.is_file() and not (Path(run_dir) / PARQUET).is_file() else Path(run_dir) / PARQUET


def _read_stream(path: Path) -> tuple[pa.Table, int, str]:
    """The whole record batches of a stream, 1 if a torn one was left out, and the stream's id."""
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError):  # empty, or cut off before its first batch
        return SCHEMA.empty_table(), 0, ""
    batches: list[pa.RecordBatch] = []
    torn = 0
    try:
        batches.extend(reader)  # keeps the batches read before a torn one
    except (pa.ArrowInvalid, OSError):
        torn = 1
    segment = (reader.schema.metadata or {}).get(SEGMENT_KEY, b"").decode()
    return pa.Table.from_batches(batches, reader.schema), torn, segment


def read_table(path: Path) -> tuple[pa.Table, int, list[str]]:
    """A run's trace as one table (`path`: the run directory or its `trace_path`): trace.parquet, then the
    stream unless trace.parquet holds it already; how many records were left out; the ids of the streams."""
    run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
    tables, skipped, segments = [SCHEMA.empty_table()], 0, []
    if (run_dir / PARQUET).is_file():
        parquet = pq.ParquetFile(run_dir / PARQUET)
        segments = json.loads((parquet.schema_arrow.metadata or {}).get(SEGMENTS_KEY, b"[]"))
        tables.append(_conformed(parquet.read()))
    if (run_dir / STREAM).is_file():
        table, torn, segment = _read_stream(run_dir / STREAM)
        if segment not in segments:
            tables.append(_conformed(table))
            skipped, segments = torn, [*segments, *([segment] if segment else [])]
    return pa.concat_tables(tables), skipped, segments


def _conformed(table: pa.Table) -> pa.Table:
    """`table` in SCHEMA; a field a trace written before it existed lacks (`rows`) is null there."""
    for missing in (f for f in SCHEMA if f.name not in table.column_names):
        table = table.append_column(missing, pa.nulls(table.num_rows, missing.type))
    return table.select(SCHEMA.names).cast(SCHEMA)


def _sessions(table: pa.Table) -> tuple[np.ndarray, np.ndarray, list[float], float]:
    """Each record's session and time offset (sessions laid end to end), each session's start, the span."""
    seq, t_end = table["seq"].to_numpy(), table["t_end"].to_numpy()
    if not len(seq):
        return seq, t_end, [], 0.0
    session = np.cumsum(np.append(True, seq[1:] <= seq[:-1])) - 1  # a resume starts again at seq 1
    first = np.flatnonzero(np.diff(session, prepend=-1))
    ends = np.maximum(np.maximum.reduceat(t_end, first), 0.0)
    starts = np.concatenate(([0.0], np.cumsum(ends[:-1])))
    return session, starts[session], starts.tolist(), float(starts[-1] + ends[-1])


class TraceReader:
    """Iterates a run's trace record by record as dicts (its fields and `session`), sessions laid end
    to end, the first `limit` records if given (a second pass over a live run's). After iteration:
    `lines` (records) read, `skipped` (left out: a torn last batch), `sessions`, `session_starts`
    (each one's offset) and `span_s` (offsets included)."""

    def __init__(self, path: Path, limit: int | None = None) -> None:
        self.path, self.limit = Path(path), limit
        self.lines = self.skipped = self.sessions = 0
        self.session_starts: list[float] = []
        self.span_s = 0.0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        table, self.skipped, _ = read_table(self.path)
        table = table.slice(0, self.limit)
        session, shift, self.session_starts, self.span_s = _sessions(table)
        self.sessions, self.lines = len(self.session_starts), table.num_rows
        for name in ("t_ready", "t_start", "t_end"):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(table[name].to_numpy() + shift))
        for batch in table.append_column("session", pa.array(session, pa.int64())).to_batches(50_000):
            yield from batch.to_pylist()


@dataclass
class TraceColumns:
    """A run's trace as one array per field, sessions laid end to end (times offset as TraceReader does).
    String fields are codes into `names[field]` (values in order of first appearance, None included);
    numbers a record lacks are -1 in `slot` (see `has_slot`), 0 in the others."""

    names: dict[str, list[Any]]
    codes: dict[str, np.ndarray]
    t_ready: np.ndarray
    t_start: np.ndarray
    t_end: np.ndarray
    slot: np.ndarray
    has_slot: np.ndarray
    tokens_in: np.ndarray
    tokens_out: np.ndarray
    retry_after: np.ndarray
    rows: np.ndarray
    """A batch call's rows (0 for a cell's own attempt)."""
    lines: int = 0
    skipped: int = 0
    session_starts: list[float] = field(default_factory=list)
    span_s: float = 0.0

    @property
    def sessions(self) -> int:
        return len(self.session_starts)


def _columns(
    table: pa.Table, skipped: int, shift: np.ndarray, session_starts: list[float], span: float
) -> TraceColumns:
    """Columns of the table's records, their times moved by `shift` (laying sessions end to end)."""

    def numbers(name: str, empty: float = 0) -> np.ndarray:
        return pc.fill_null(table[name], empty).to_numpy()

    names, codes = {}, {}
    for name in STRING_FIELDS:
        encoded = table[name].combine_chunks().dictionary_encode(null_encoding="encode")
        names[name], codes[name] = encoded.dictionary.to_pylist(), encoded.indices.to_numpy(zero_copy_only=False)
    return TraceColumns(
        names=names,
        codes=codes,
        t_ready=numbers("t_ready") + shift,
        t_start=numbers("t_start") + shift,
        t_end=numbers("t_end") + shift,
        slot=numbers("slot", -1),
        has_slot=pc.is_valid(table["slot"]).to_numpy(zero_copy_only=False),
        tokens_in=numbers("tokens_in"),
        tokens_out=numbers("tokens_out"),
        retry_after=numbers("retry_after_s", 0.0),
        rows=numbers("rows"),
        lines=table.num_rows,
        skipped=skipped,
        session_starts=session_starts,
        span_s=span,
    )


def read_trace(path: Path) -> TraceColumns:
    """A run's trace as columns (`path`: the run directory or its `trace_path`); none if it has none."""
    table, skipped, _ = read_table(path)
    _, shift, starts, span = _sessions(table)
    return _columns(table, skipped, shift, starts, span)


def trace_columns(
    records: Iterable[Mapping[str, Any]],
    *,
    skipped: int = 0,
    session_starts: list[float] | None = None,
    span_s: float | None = None,
) -> TraceColumns:
    """Columns of trace records given as dicts (TraceReader's, or TaskTrace._asdict()), whose times are
    laid end to end already; by default one session, spanning to the last end."""
    table = pa.Table.from_pylist(list(records), schema=SCHEMA)
    t_end = table["t_end"].to_numpy()
    starts = ([0.0] if len(t_end) else []) if session_starts is None else session_starts
    span = max(float(t_end.max()), 0.0) if span_s is None and len(t_end) else span_s or 0.0
    return _columns(table, skipped, np.zeros(len(t_end)), starts, span)
