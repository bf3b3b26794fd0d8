"""Reading a run's trace back: which file, a live stream's prefix, sessions laid end to end, the columns
metrics read (string codes, missing numbers) and records given as dicts. Torn batches and the folding of
streams into trace.parquet are in test_tracing.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from treadle.engine.trace_reader import (
    PARQUET,
    STREAM,
    TraceChunks,
    TraceReader,
    read_trace,
    trace_columns,
    trace_path,
)
from treadle.engine.trace_schema import SCHEMA


def attempt(seq: int, t: float, **fields) -> dict:
    record = {"seq": seq, "row": seq - 1, "column": "a", "attempt": 1, "slot": 0, "t_ready": t, "t_start": t,
              "t_end": t + 1.0, "status": "done"}  # fmt: skip
    return {**record, **fields}


def table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=SCHEMA)


def write_stream(path: Path, records: list[dict]) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as stream:
        stream.write_table(table(records))


def test_the_trace_is_the_stream_until_trace_parquet_exists(tmp_path):
    assert trace_path(tmp_path) == tmp_path / PARQUET  # no trace yet
    write_stream(tmp_path / STREAM, [attempt(1, 0.0)])
    assert trace_path(tmp_path) == tmp_path / STREAM
    pq.write_table(table([attempt(1, 0.0)]), tmp_path / PARQUET)
    assert trace_path(tmp_path) == tmp_path / PARQUET


def test_a_run_without_a_trace_reads_as_empty(tmp_path):
    columns = read_trace(tmp_path)
    assert (columns.lines, columns.skipped, columns.sessions, columns.span_s) == (0, 0, 0, 0.0)
    reader = TraceReader(tmp_path)
    assert list(reader) == [] and (reader.lines, reader.sessions) == (0, 0)


def test_a_live_streams_prefix_is_its_first_records(tmp_path):
    """A second pass over a live run reads no further than the first one did (`limit`)."""
    write_stream(tmp_path / STREAM, [attempt(seq, float(seq)) for seq in range(1, 6)])
    reader = TraceReader(tmp_path / STREAM, limit=3)
    assert [record["seq"] for record in reader] == [1, 2, 3] and reader.lines == 3


def test_a_resumed_runs_sessions_are_laid_end_to_end(tmp_path):
    """The session in trace.parquet ends at 4 s; the stream's (seq from 1 again) is read 4 s later."""
    pq.write_table(table([attempt(1, 0.0), attempt(2, 3.0)]), tmp_path / PARQUET)
    write_stream(tmp_path / STREAM, [attempt(1, 0.5)])
    reader = TraceReader(tmp_path)
    records = list(reader)
    assert [(r["session"], r["t_start"], r["t_end"]) for r in records] == [(0, 0.0, 1.0), (0, 3.0, 4.0), (1, 4.5, 5.5)]
    assert (reader.sessions, reader.session_starts, reader.span_s) == (2, [0.0, 4.0], 5.5)
    columns = read_trace(tmp_path)
    assert columns.t_start.tolist() == [0.0, 3.0, 4.5] and columns.session_starts == [0.0, 4.0]


def test_columns_code_strings_and_fill_missing_numbers(tmp_path):
    llm_call = attempt(2, 1.0, column="a:llm", model="m", tokens_in=7, tokens_out=3, parent="a")
    failed = attempt(3, 2.0, status="retry", error_class="ValueError", retry_after_s=1.5)
    pq.write_table(table([attempt(1, 0.0), llm_call, failed]), tmp_path / PARQUET)
    columns = read_trace(tmp_path)
    decoded = {name: [columns.names[name][code] for code in columns.codes[name]] for name in columns.names}
    assert decoded["column"] == ["a", "a:llm", "a"] and decoded["model"] == [None, "m", None]
    assert decoded["status"] == ["done", "done", "retry"] and decoded["error_class"] == [None, None, "ValueError"]
    assert columns.tokens_in.tolist() == [0, 7, 0] and columns.retry_after.tolist() == [0.0, 0.0, 1.5]


def test_records_given_as_dicts_are_one_session_to_their_last_end():
    columns = trace_columns([attempt(1, 0.0), attempt(2, 2.5)])
    assert (columns.lines, columns.session_starts, columns.span_s) == (2, [0.0], 3.5)
    empty = trace_columns([])
    assert (empty.lines, empty.sessions, empty.span_s) == (0, 0, 0.0)


def test_chunks_are_the_whole_traces_columns_piece_by_piece(tmp_path):
    """Chunks of any size lay sessions end to end as read_trace does, string by string, time by time;
    a torn last batch is skipped in both. Read with some fields only, the others are null."""
    pq.write_table(table([attempt(s, s * 0.1) for s in range(1, 30)] + [attempt(s, s * 0.2) for s in range(1, 9)]),
                   tmp_path / PARQUET)  # fmt: skip
    calls = [attempt(s, s * 0.3, column="a:llm", model="m", parent="a", status="retry") for s in range(1, 13)]
    with pa.OSFile(str(tmp_path / STREAM), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as stream:
        stream.write_table(table(calls))
        stream.write_table(table(calls[:2]))
    with open(tmp_path / STREAM, "r+b") as handle:
        handle.truncate((tmp_path / STREAM).stat().st_size - 20)  # the last batch cut off
    whole = read_trace(tmp_path)
    for rows in (1, 5, 16, 1_000):
        chunks = TraceChunks(tmp_path, batch_rows=rows)
        assert (chunks.lines, chunks.skipped, chunks.session_starts, chunks.span_s) == (
            whole.lines, whole.skipped, whole.session_starts, whole.span_s)  # fmt: skip
        parts = list(chunks)
        assert chunks.sessions == 3 and whole.skipped == 1 and sum(part.lines for part in parts) == 49
        for name in ("t_ready", "t_start", "t_end", "slot", "tokens_in", "retry_after"):
            assert np.concatenate([getattr(part, name) for part in parts]).tolist() == getattr(whole, name).tolist()
        for name, values in whole.names.items():
            decoded = [part.names[name][code] for part in parts for code in part.codes[name]]
            assert decoded == [values[code] for code in whole.codes[name]], name
        narrow = list(chunks.reading(["column", "t_ready"]))
        assert np.concatenate([part.t_ready for part in narrow]).tolist() == whole.t_ready.tolist()
        assert [part.names["column"][code] for part in narrow for code in part.codes["column"]] == [
            whole.names["column"][code] for code in whole.codes["column"]
        ]
        assert not any(part.tokens_in.any() or part.has_slot.any() or any(part.names["model"]) for part in narrow)
