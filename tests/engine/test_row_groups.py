"""Row groups in flight: admitted in order under their limit, finished, written, reopened, counted."""

from __future__ import annotations

from treadle.engine.limits import ROW_GROUPS, Limit
from treadle.engine.row_groups import RowGroups


def admit_all(groups: RowGroups) -> list[int]:
    admitted = []
    while (group := groups.admit_next()) is not None:
        admitted.append(group)
    return admitted


def test_groups_are_admitted_in_order_while_the_limit_has_room():
    groups = RowGroups(5, Limit(ROW_GROUPS, 2))
    assert admit_all(groups) == [0, 1]
    assert groups.limit.in_use == 2
    assert groups.finish(0)
    assert admit_all(groups) == [], "a finished group holds its place until its file is written"
    assert groups.written(0)
    assert admit_all(groups) == [2]
    assert groups.counts() == (1, 2, 2)
    assert groups.in_flight() == [1, 2]


def test_groups_finished_before_a_resume_are_skipped():
    groups = RowGroups(4, Limit(ROW_GROUPS, 10), finished=[0, 2])
    assert admit_all(groups) == [1, 3]
    assert groups.is_finished(0) and not groups.is_finished(1)


def test_only_a_group_in_flight_finishes_and_its_write_frees_the_limit_once():
    groups = RowGroups(3, Limit(ROW_GROUPS, 1))
    assert not groups.finish(1), "not started yet"
    assert admit_all(groups) == [0]
    assert groups.finish(0)
    assert not groups.finish(0), "already finished"
    assert groups.limit.in_use == 1
    assert groups.written(0)
    assert groups.limit.in_use == 0


def test_a_reopened_group_is_in_flight_again_and_holds_the_limit():
    groups = RowGroups(2, Limit(ROW_GROUPS, 1))
    admit_all(groups)
    groups.finish(0)
    groups.reopen(0)
    assert groups.in_flight() == [0] and groups.limit.in_use == 1
    groups.reopen(0)
    assert groups.limit.in_use == 1, "reopening a group in flight changes nothing"
    assert groups.counts() == (0, 1, 1)


def test_a_group_reopened_while_written_keeps_one_place_until_its_last_write():
    groups = RowGroups(2, Limit(ROW_GROUPS, 1))
    admit_all(groups)
    groups.finish(0)
    groups.reopen(0)  # a retry while the first write is under way
    assert groups.limit.in_use == 1
    assert not groups.written(0), "the first write is done, but the group is in flight again"
    assert groups.finish(0)
    assert groups.limit.in_use == 1 and admit_all(groups) == []
    assert groups.written(0)
    assert groups.limit.in_use == 0 and admit_all(groups) == [1]


def test_a_group_finished_twice_before_its_writes_are_done_frees_its_place_after_the_second():
    groups = RowGroups(2, Limit(ROW_GROUPS, 1))
    admit_all(groups)
    groups.finish(0)
    groups.reopen(0)
    groups.finish(0)  # two writes pending
    # the first write to end must leave the rows in memory: the second has not read them yet
    assert groups.writes_pending(0) == 2
    assert not groups.written(0)
    assert groups.writes_pending(0) == 1
    assert groups.limit.in_use == 1
    assert groups.written(0)
    assert groups.writes_pending(0) == 0
    assert groups.limit.in_use == 0
