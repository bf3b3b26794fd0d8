"""CellTracker: dependency counters, deltas, blocking, retry and drop, counts by state."""

import numpy as np

from treadle.engine.tracker import N_STATES, CellState, CellTracker

# a -> b -> d, a -> c -> d  (node indices in topological order)
UP = [[], [0], [0], [1, 2]]
DOWN = [[1, 2], [3], [3], []]


def make(rows: int = 4, group_size: int = 2) -> CellTracker:
    return CellTracker(rows, UP, DOWN, group_size)


def cell(tracker: CellTracker, row: int, node: int) -> int:
    return row * tracker.n_nodes + node


def run_done(tracker: CellTracker, c: int) -> list[int]:
    tracker.start(c)
    return tracker.complete(c)


def test_activation_readies_only_roots_of_the_group():
    tracker = make()
    assert tracker.activate_group(0) == [cell(tracker, 0, 0), cell(tracker, 1, 0)]
    assert tracker.state[cell(tracker, 2, 0)] == CellState.WAITING


def test_completion_readies_dependents_when_their_last_input_is_done():
    tracker = make()
    tracker.activate_group(0)
    assert run_done(tracker, cell(tracker, 0, 0)) == [cell(tracker, 0, 1), cell(tracker, 0, 2)]
    assert run_done(tracker, cell(tracker, 0, 1)) == []
    assert run_done(tracker, cell(tracker, 0, 2)) == [cell(tracker, 0, 3)]


def test_failure_blocks_downstream_in_the_row_only():
    tracker = make()
    tracker.activate_group(0)
    run_done(tracker, cell(tracker, 0, 0))
    tracker.start(cell(tracker, 0, 1))
    assert tracker.fail(cell(tracker, 0, 1)) == [cell(tracker, 0, 3)]
    assert tracker.state[cell(tracker, 0, 2)] == CellState.READY
    assert tracker.state[cell(tracker, 1, 3)] == CellState.WAITING


def test_retry_turns_failed_and_blocked_back_into_work():
    tracker = make()
    tracker.activate_group(0)
    run_done(tracker, cell(tracker, 0, 0))
    run_done(tracker, cell(tracker, 0, 2))
    tracker.start(cell(tracker, 0, 1))
    tracker.fail(cell(tracker, 0, 1))
    assert tracker.retry(cell(tracker, 0, 1)) == [cell(tracker, 0, 1)]
    assert tracker.state[cell(tracker, 0, 3)] == CellState.WAITING
    assert run_done(tracker, cell(tracker, 0, 1)) == [cell(tracker, 0, 3)]


def test_retry_keeps_cells_blocked_by_another_failure():
    tracker = make()
    tracker.activate_group(0)
    run_done(tracker, cell(tracker, 0, 0))
    for node in (1, 2):
        tracker.start(cell(tracker, 0, node))
        tracker.fail(cell(tracker, 0, node))
    tracker.retry(cell(tracker, 0, 1))
    assert tracker.state[cell(tracker, 0, 3)] == CellState.BLOCKED


def test_group_counts_unfinished_cells_and_drop_finishes_them():
    tracker = make()
    tracker.activate_group(0)
    assert tracker.group_open[0] == 8
    tracker.drop_row(0)
    assert tracker.group_open[0] == 4
    assert tracker.row_dropped(0)
    tracker.drop_row(2)  # a row of a group not yet admitted
    assert tracker.activate_group(1) == [cell(tracker, 3, 0)]
    assert tracker.group_open[1] == 4


def test_counts_by_state_always_add_up():
    tracker = make()
    tracker.activate_group(0)
    run_done(tracker, cell(tracker, 0, 0))
    tracker.start(cell(tracker, 0, 1))
    tracker.fail(cell(tracker, 0, 1))
    tracker.drop_row(1)
    totals = tracker.totals()
    assert sum(totals) == 16
    assert totals[CellState.DONE] == 1
    assert totals[CellState.FAILED] == 1
    assert totals[CellState.BLOCKED] == 1
    assert totals[CellState.DROPPED] == 4
    for node in range(tracker.n_nodes):
        assert sum(tracker.counts[node * N_STATES : (node + 1) * N_STATES]) == 4
    assert tracker.unfinished == 16 - 7


def same_state(bulk: CellTracker, one_by_one: CellTracker) -> None:
    assert bulk.state == one_by_one.state
    assert list(bulk.pending) == list(one_by_one.pending)
    assert bulk.counts == one_by_one.counts
    assert (bulk.unfinished, bulk.group_open) == (one_by_one.unfinished, one_by_one.group_open)


def test_a_batch_calls_bulk_start_and_completion_match_doing_each_cell():
    bulk, one_by_one = make(rows=6, group_size=3), make(rows=6, group_size=3)
    for tracker in (bulk, one_by_one):
        tracker.activate_group(0)
        tracker.activate_group(1)
        run_done(tracker, cell(tracker, 1, 0))
        run_done(tracker, cell(tracker, 1, 1))  # row 1's d now waits only on c
    roots = np.array([cell(bulk, row, 0) for row in (0, 2, 3)])
    assert bulk.start_many(np.array([*roots, cell(bulk, 1, 0)])).tolist() == roots.tolist(), "done cells stay"
    assert bulk.complete_many(roots) == sorted(c for r in (0, 2, 3) for c in (cell(bulk, r, 1), cell(bulk, r, 2)))
    ready = []
    for c in roots.tolist():
        ready += run_done(one_by_one, c)
    same_state(bulk, one_by_one)

    column_c = np.array([cell(bulk, row, 2) for row in (0, 1, 2)])
    bulk.start_many(column_c)
    assert bulk.complete_many(column_c) == [cell(bulk, 1, 3)], "d of rows 0 and 2 still waits for b"
    for c in column_c.tolist():
        run_done(one_by_one, c)
    same_state(bulk, one_by_one)


def test_rows_filtered_together_are_dropped_counted_and_remembered_by_filter():
    bulk, one_by_one = make(rows=6, group_size=3), make(rows=6, group_size=3)
    for tracker in (bulk, one_by_one):
        tracker.track_filters()
        tracker.activate_group(0)
        tracker.activate_group(1)
        run_done(tracker, cell(tracker, 0, 0))
        tracker.start(cell(tracker, 0, 1))  # a running cell of row 0, a done one, ready and waiting ones
    bulk.filter_rows(np.array([0, 2, 4]), node=2)
    for row in (0, 2, 4):
        one_by_one.filter_row(row, node=2)
    same_state(bulk, one_by_one)
    assert bulk.row_outcomes() == one_by_one.row_outcomes()
    assert bulk.row_outcomes()["filtered"] == 3 and bulk.row_outcomes()["dropped"] == 0
    rows, nodes = bulk.filtered_rows()
    assert (rows.tolist(), nodes.tolist()) == ([0, 2, 4], [2, 2, 2])
