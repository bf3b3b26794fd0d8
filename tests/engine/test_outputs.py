"""RunDirectory: row-group files with their cell states, output.parquet assembled from them,
failures.jsonl and summary.json, and giving back a directory a run never used."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from treadle.engine.journal import replay
from treadle.engine.outputs import COLUMNS_KEY, INTERNAL_FIELDS, ROW_FIELD, STATES_FIELD, RunDirectory
from treadle.engine.rows import GroupValues

NODES = ["a", "b"]
DONE, FAILED = 3, 4  # any bytes: the files keep them as given


def made(tmp_path: Path) -> RunDirectory:
    directory = RunDirectory(tmp_path / "run")
    directory.create()
    return directory


def write(directory: RunDirectory, group: int, rows: dict[int, dict], columns=("id", "a", "b")) -> None:
    states = [bytes([DONE, DONE])] * len(rows)
    write_rows(directory, group, list(rows.items()), list(columns), states)


def write_rows(directory: RunDirectory, group: int, rows: list[tuple[int, dict]], columns, states) -> None:
    values = GroupValues(np.array([row for row, _ in rows], dtype=np.int64), states, records=[v for _, v in rows])
    directory.write_group(group, values, columns, NODES)


def test_a_group_file_keeps_rows_values_and_cell_states_and_reads_back(tmp_path):
    directory = made(tmp_path)
    rows = [(10, {"id": 10, "a": 1, "b": "x"}), (11, {"id": 11, "a": None, "b": None})]
    states = [bytes([DONE, DONE]), bytes([FAILED, 5])]
    write_rows(directory, 1, rows, ["id", "a", "b"], states)

    path = directory.group_path(1)
    assert path.name == "rg-000001.parquet"
    assert json.loads(pq.read_schema(path).metadata[COLUMNS_KEY]) == NODES
    assert directory.read_group_states(1) == (NODES, [10, 11], states)
    assert directory.read_group_rows(1) == {10: {"id": 10, "a": 1, "b": "x"}, 11: {"id": 11, "a": None, "b": None}}
    assert directory.read_group_states(0) is None, "a group never written"
    assert [p.name for p in directory.groups_dir.iterdir()] == [path.name], "no temporary file is left"


def test_keys_a_row_adds_beyond_the_declared_columns_are_kept_in_first_seen_order(tmp_path):
    directory = made(tmp_path)
    rows = [(0, {"id": 0, "a": 1}), (1, {"id": 1, "a": 2, "a__usage": {"tokens": 3}, "a__votes": 2})]
    write_rows(directory, 0, rows, ["id", "a"], [bytes([DONE, DONE])] * 2)
    assert pq.read_schema(directory.group_path(0)).names == [*INTERNAL_FIELDS, "id", "a", "a__usage", "a__votes"]
    assert directory.read_group_rows(0)[0] == {"id": 0, "a": 1, "a__usage": None, "a__votes": None}


def test_output_joins_the_groups_in_order_without_internal_fields_or_dropped_rows(tmp_path):
    directory = made(tmp_path)
    write(directory, 1, {2: {"id": 2, "a": 20, "b": "c"}, 3: {"id": 3, "a": 30, "b": "d"}})
    write(directory, 0, {0: {"id": 0, "a": 0, "b": "a"}, 1: {"id": 1, "a": 10, "b": "b"}})

    index = directory.assemble_output(range(3), dropped_rows={1})  # group 2 was never written

    output = pq.read_table(directory.output_path)
    assert index.column(ROW_FIELD).to_pylist() == [0, 2, 3], "each output row's seed row"
    assert index.column(STATES_FIELD).to_pylist() == [bytes([DONE, DONE])] * 3
    assert output.column_names == ["id", "a", "b"]
    assert output.to_pydict() == {"id": [0, 2, 3], "a": [0, 20, 30], "b": ["a", "c", "d"]}
    assert not directory.output_path.with_name("output.parquet.tmp").exists()


def test_output_unifies_column_types_that_differ_between_groups(tmp_path):
    directory = made(tmp_path)
    # Group 0: `a` all null (null type), `b` ints, no `extra`. Group 1: `a` ints, `b` text, `extra` present.
    write(directory, 0, {0: {"id": 0, "a": None, "b": 1}})
    write(directory, 1, {1: {"id": 1, "a": 5, "b": "five", "extra": 1.5}}, columns=("id", "a", "b", "extra"))
    # Group 2: `b` a whole number again, `extra` a whole number where the others had a float.
    write(directory, 2, {2: {"id": 2, "a": 7, "b": 2, "extra": 2}}, columns=("id", "a", "b", "extra"))

    assert directory.assemble_output(range(3), set()).num_rows == 3

    output = pq.read_table(directory.output_path)
    assert output.schema.field("a").type == pa.int64()
    assert output.schema.field("b").type == pa.string(), "int and text in one column become text"
    assert output.schema.field("extra").type == pa.float64()
    assert output.to_pydict() == {
        "id": [0, 1, 2],
        "a": [None, 5, 7],
        "b": ["1", "five", "2"],
        "extra": [None, 1.5, 2.0],
    }


def test_compact_keeps_only_cell_states_and_expand_gives_back_the_group_files(tmp_path):
    directory = made(tmp_path)
    states = {0: bytes([DONE, DONE]), 2: bytes([DONE, FAILED]), 3: bytes([DONE, DONE])}
    for group, rows in ((0, (0, 1)), (1, (2, 3))):
        values = [(row, {"id": row, "a": row * 10, "a__usage": {"t": row}, "b": None}) for row in rows]
        write_rows(directory, group, values, ["id", "a", "a__usage", "b"], [states.get(r, b"") for r in rows])
    before = {g: directory.read_group_rows(g) for g in (0, 1)}
    directory.journal_path.write_text(json.dumps({"columns": NODES}) + "\n" + json.dumps([[1, -1, None]]) + "\n")

    directory.compact(directory.assemble_output(range(2), {1}), {1}, NODES, group_size=2)

    assert sorted(p.name for p in directory.path.iterdir()) == ["cells.parquet", "output.parquet"]
    assert directory.read_written_row(2, 1) == {"id": 2, "a": 20, "a__usage": {"t": 2}, "b": None}
    assert directory.read_written_row(1, 0) is None, "a dropped row is not in the output"

    directory.expand()

    assert sorted(p.name for p in directory.path.iterdir()) == ["groups", "journal.jsonl", "output.parquet"]
    assert directory.read_group_states(1) == (NODES, [2, 3], [states[2], states[3]])
    assert directory.read_group_states(0) == (NODES, [0], [states[0]]), "the dropped row stays out"
    assert directory.read_group_rows(1) == before[1]
    assert directory.read_group_rows(0) == {0: before[0][0]}
    assert replay(directory.journal_path).dropped == {1}


def test_a_column_of_mixed_types_within_a_group_is_kept_as_text(tmp_path):
    directory = made(tmp_path)
    write(directory, 0, {0: {"id": 0, "a": 1, "b": "x"}, 1: {"id": 1, "a": {"k": [1]}, "b": None}})
    directory.assemble_output([0], set())
    assert pq.read_table(directory.output_path).column("a").to_pylist() == ["1", '{"k": [1]}']


def test_failures_are_one_json_line_each_and_the_summary_is_replaced_whole(tmp_path):
    directory = made(tmp_path)
    failures = [
        {"row": 2, "column": "a", "error_class": "ValueError", "message": "bad", "attempts": 3, "action": "fail"},
        {"row": 5, "column": "b", "error_class": "TimeoutError", "message": "slow", "attempts": 1, "action": "fail"},
    ]
    directory.write_failures(iter(failures))
    lines = directory.failures_path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == failures
    directory.write_failures([])
    assert directory.failures_path.read_text() == "", "a run without failures still writes the file"

    directory.write_summary({"status": "running", "at": dt.date(2024, 1, 2), "out": directory.output_path})
    directory.write_summary({"status": "done", "at": dt.date(2024, 1, 3), "out": directory.output_path})
    assert json.loads(directory.summary_path.read_text()) == {
        "status": "done",
        "at": "2024-01-03",
        "out": str(directory.output_path),
    }
    assert sorted(p.name for p in directory.path.iterdir()) == ["failures.jsonl", "groups", "summary.json"]


def test_release_removes_only_a_claimed_directory_that_is_still_empty(tmp_path):
    claimed = RunDirectory(tmp_path / "claimed", claimed=True)
    claimed.path.mkdir()
    claimed.release()
    assert not claimed.path.exists()

    used = RunDirectory(tmp_path / "used", claimed=True)
    used.create()  # groups/ now in it
    used.release()
    assert used.groups_dir.is_dir()

    given = RunDirectory(tmp_path / "given")  # the user's --out: never removed
    given.path.mkdir()
    given.release()
    assert given.path.is_dir()


def test_failures_and_filtered_rows_are_written_in_row_order_as_the_same_json_lines(tmp_path):
    directory = made(tmp_path)
    failed = [{"row": 1, "column": "a", "error_class": "E", "message": "m", "attempts": 2, "action": "fail"}]
    failed.append({**failed[0], "row": 5})

    def filtered(column: str, row: int = 0) -> dict:
        return {"row": row, "column": column, "error_class": "Filtered", "message": f"filtered by {column}"}

    directory.write_failures(iter(failed), [(filtered("f"), np.array([0, 2, 6])), (filtered("g"), np.array([3]))])
    lines = directory.failures_path.read_text().splitlines()
    expected = [filtered("f", 0), failed[0], filtered("f", 2), filtered("g", 3), failed[1], filtered("f", 6)]
    assert lines == [json.dumps(record) for record in expected]
