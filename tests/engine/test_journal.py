"""The journal on disk: what one loop iteration writes, what `replay` reads back (torn last line,
several openings, dropped rows), and what `recover` tells a resumed run from the journal and the
row-group files together."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import numpy as np

from treadle.engine.journal import Journal, replay
from treadle.engine.outputs import RunDirectory
from treadle.engine.resume import recover
from treadle.engine.rows import GroupValues
from treadle.engine.tracker import CellState

NODES = ["a", "b"]
OUTPUTS = {"a": ("a",), "b": ("b",)}
DONE = CellState.DONE


def unexpected(exc: OSError) -> None:
    raise AssertionError(f"the journal reported a write error: {exc}")


def lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_cells_finished_in_one_loop_iteration_reach_the_file_as_one_line_by_the_next(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, NODES, on_error=unexpected)
    journal.open(asyncio.get_running_loop())
    assert lines(path) == [{"columns": NODES}]

    journal.done(0, 0, {"a": 1})
    journal.done(1, 0, {"a": 2, "a__usage": {"total_tokens": 7}})
    journal.dropped(4)
    assert lines(path) == [{"columns": NODES}], "nothing is written inline, on the hot path"
    await asyncio.sleep(0)  # one loop iteration: the flush scheduled by the first completion runs
    assert lines(path) == [
        {"columns": NODES},
        [[0, 0, {"a": 1}], [1, 0, {"a": 2, "a__usage": {"total_tokens": 7}}], [4, -1, None]],
    ]

    journal.done(0, 1, {"b": dt.date(2024, 5, 6)})  # values JSON cannot hold are written as text
    journal.close()  # flushes what is pending without waiting for the loop
    assert lines(path)[-1] == [[0, 1, {"b": "2024-05-06"}]]
    assert replay(path).done == {
        0: {"a": {"a": 1}, "b": {"b": "2024-05-06"}},
        1: {"a": {"a": 2, "a__usage": {"total_tokens": 7}}},
    }
    assert replay(path).dropped == {4}


def test_a_torn_last_line_is_ignored_and_everything_before_it_is_read(tmp_path):
    path = tmp_path / "journal.jsonl"
    whole = [{"columns": NODES}, [[0, 0, {"a": 1}], [0, 1, {"b": 2}]], [[1, 0, {"a": 3}]]]
    path.write_text("".join(json.dumps(line) + "\n" for line in whole) + '[[1,1,{"b":')
    replayed = replay(path)
    assert replayed.done == {0: {"a": {"a": 1}, "b": {"b": 2}}, 1: {"a": {"a": 3}}}
    assert replayed.dropped == set()


async def test_each_opening_names_its_columns_and_later_lines_are_read_by_the_latest_names(tmp_path):
    path = tmp_path / "journal.jsonl"
    loop = asyncio.get_running_loop()
    first = Journal(path, ["a", "b"], on_error=unexpected)
    first.open(loop)
    first.done(0, 1, {"b": "first"})
    first.close()
    # A resume after the pipeline gained a column: node 1 is now `c`.
    second = Journal(path, ["a", "c", "b"], on_error=unexpected)
    second.open(loop)
    second.done(0, 1, {"c": "second"})
    second.done(1, 2, {"b": "second"})
    second.close()
    assert [line for line in lines(path) if isinstance(line, dict)] == [
        {"columns": ["a", "b"]},
        {"columns": ["a", "c", "b"]},
    ]
    assert replay(path).done == {0: {"b": {"b": "first"}, "c": {"c": "second"}}, 1: {"b": {"b": "second"}}}


def test_no_journal_is_nothing_finished(tmp_path):
    replayed = replay(tmp_path / "journal.jsonl")
    assert (replayed.done, replayed.dropped) == ({}, set())


def write_group(directory: RunDirectory, group: int, rows: dict[int, tuple[dict, bytes]], nodes=NODES) -> None:
    values = GroupValues(
        np.array(list(rows), dtype=np.int64), [s for _, s in rows.values()], records=[v for v, _ in rows.values()]
    )
    directory.write_group(group, values, ["id", *OUTPUTS], nodes)


def journal(directory: RunDirectory, *entries: list, torn: str = "") -> None:
    """A journal of one opening holding `entries`, then `torn`: a line a kill cut short."""
    whole = "".join(json.dumps(entry) + "\n" for entry in entries)
    directory.journal_path.write_text(json.dumps({"columns": NODES}) + "\n" + whole + torn)


def test_resume_sees_complete_groups_whole_and_the_rest_cell_by_cell(tmp_path):
    directory = RunDirectory(tmp_path / "run")
    directory.create()
    both = bytes([DONE, DONE])
    # Group 0 (rows 0-1): every cell done. Group 1 (rows 2-3): row 2's `b` failed, row 3 not started.
    write_group(directory, 0, {0: ({"id": 0, "a": 0, "b": 0}, both), 1: ({"id": 1, "a": 1, "b": 1}, both)})
    write_group(
        directory,
        1,
        {
            2: ({"id": 2, "a": 2, "a__usage": {"t": 1}, "b": None}, bytes([DONE, CellState.FAILED])),
            3: ({"id": 3, "a": None, "b": None}, bytes([CellState.WAITING, CellState.WAITING])),
        },
    )
    # The journal knows more than the group files: row 3's `a`, row 4 (group 2, never written), a drop.
    # Row 1's done cell is left out: its group's file is complete.
    journal(
        directory,
        [[1, 0, {"a": 1}], [3, 0, {"a": 3}], [4, 0, {"a": 4}], [4, 1, {"b": 4}], [5, -1, None], [0, -1, None]],
        torn='[[6,0,{"a"',
    )

    recovery = recover(directory, NODES, OUTPUTS, n_groups=4, group_size=2)

    assert recovery.finished_groups == {0}
    assert recovery.done == {
        2: {"a": {"a": 2, "a__usage": {"t": 1}}},
        3: {"a": {"a": 3}},
        4: {"a": {"a": 4}, "b": {"b": 4}},
    }
    assert recovery.dropped == {0, 5}, "a drop is kept, whatever the group"


def test_resume_with_columns_to_recompute_or_a_changed_column_order_redoes_them(tmp_path):
    directory = RunDirectory(tmp_path / "run")
    directory.create()
    both = bytes([DONE, DONE])
    write_group(directory, 0, {0: ({"id": 0, "a": 0, "b": 0}, both)})
    journal(directory, [[1, 0, {"a": 1}], [1, 1, {"b": 1}]])

    redo_b = recover(directory, NODES, OUTPUTS, n_groups=1, group_size=2, recompute={"b"})
    assert redo_b.finished_groups == set(), "a complete group is opened again when a column is redone"
    assert redo_b.done == {0: {"a": {"a": 0}}, 1: {"a": {"a": 1}}}

    # The group file was written when the columns were [b, a]: not complete for the pipeline as it is now.
    write_group(directory, 0, {0: ({"id": 0, "a": 0, "b": 0}, both)}, nodes=["b", "a"])
    reordered = recover(directory, NODES, OUTPUTS, n_groups=1, group_size=2)
    assert reordered.finished_groups == set()
    assert reordered.done[0] == {"a": {"a": 0}, "b": {"b": 0}}

    # A column the pipeline no longer has is not carried over.
    gone = recover(directory, ["a"], {"a": ("a",)}, n_groups=1, group_size=2)
    assert gone.done == {0: {"a": {"a": 0}}, 1: {"a": {"a": 1}}}


async def test_a_batch_call_is_one_columnar_line_and_reads_back_cell_by_cell(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, NODES, on_error=unexpected)
    journal.open(asyncio.get_running_loop())
    journal.done(9, 1, {"b": "x"})
    journal.done_call(0, [3, 5], {"a": [30, 50], "a__usage": [{"t": 1}, {"t": 2}]})
    journal.done_call(1, [3], {})  # a filter's kept row: done, no values
    journal.dropped_rows([4, 6])
    await asyncio.sleep(0)  # one loop iteration: the flush scheduled by the first entry runs
    assert lines(path)[1:] == [
        [[9, 1, {"b": "x"}]],
        {"node": 0, "rows": [3, 5], "values": {"a": [30, 50], "a__usage": [{"t": 1}, {"t": 2}]}},
        {"node": 1, "rows": [3], "values": {}},
        {"node": -1, "rows": [4, 6], "filtered_by": None},
    ]
    journal.close()
    replayed = replay(path)
    assert replayed.done == {
        3: {"a": {"a": 30, "a__usage": {"t": 1}}, "b": {}},
        5: {"a": {"a": 50, "a__usage": {"t": 2}}},
        9: {"b": {"b": "x"}},
    }
    assert replayed.dropped == {4, 6}
