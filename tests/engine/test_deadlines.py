"""Deadlines on a virtual clock: the watchdog cuts a running cell at its deadline, and only then."""

from __future__ import annotations

import asyncio

import pytest
from virtual_time import VirtualClock, run_virtual

from treadle.engine.deadlines import Deadlines


@pytest.mark.parametrize(("shortest_timeout_s", "tick_s"), [(1.0, 0.05), (2.0, 0.1), (60.0, 0.25), (0.01, 0.005)])
def test_the_watchdog_looks_twenty_times_per_shortest_timeout_within_bounds(shortest_timeout_s, tick_s):
    assert Deadlines(shortest_timeout_s, VirtualClock()).tick_s == pytest.approx(tick_s)


async def _cell(deadlines: Deadlines, clock: VirtualClock, cell: int, timeout_s: float, work_s: float) -> str:
    """A cell as the scheduler runs one: registered with its deadline while it works for `work_s`."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.running[cell] = (clock() + timeout_s, task)
    try:
        await asyncio.sleep(work_s)
    except asyncio.CancelledError:
        if not deadlines.expired(cell, task):
            raise
        return "timeout"
    finally:
        del deadlines.running[cell]
    return "done"


def run_cells(
    timeout_s: float, works_s: list[float], offset_s: float = 0.0
) -> tuple[list[str], list[float], Deadlines]:
    """Run one cell per entry of `works_s` under the watchdog, all starting `offset_s` after it; their
    outcomes and how long each ran."""
    clock = VirtualClock()
    deadlines = Deadlines(timeout_s, clock)
    ran: list[float] = []

    async def cell(index: int, work_s: float) -> str:
        await asyncio.sleep(offset_s)
        started = clock()
        outcome = await _cell(deadlines, clock, index, timeout_s, work_s)
        ran.append(clock() - started)
        return outcome

    async def main() -> list[str]:
        watchdog = asyncio.create_task(deadlines.watch())
        outcomes = await asyncio.gather(*(cell(i, work) for i, work in enumerate(works_s)))
        watchdog.cancel()
        return list(outcomes)

    return run_virtual(main(), clock), ran, deadlines


@pytest.mark.parametrize("offset_s", [0.0, 0.03, 0.07])
def test_a_cell_over_its_timeout_is_cut_at_the_first_look_after_its_deadline(offset_s):
    [outcome], [ran], deadlines = run_cells(2.0, [3600.0], offset_s)
    assert outcome == "timeout"
    assert 2.0 < ran <= 2.0 + deadlines.tick_s


def test_a_cell_that_ends_before_its_deadline_is_left_alone():
    outcomes, ran, _ = run_cells(2.0, [1.99, 0.5], offset_s=0.03)
    assert outcomes == ["done", "done"]
    assert sorted(ran) == pytest.approx([0.5, 1.99])


def test_only_the_cells_past_their_deadline_are_cut():
    outcomes, _, deadlines = run_cells(1.0, [0.2, 5.0, 0.9, 7.0])
    assert outcomes == ["done", "timeout", "done", "timeout"]
    assert deadlines.running == {}


def test_a_cut_is_taken_back_so_the_cell_can_record_its_timeout():
    clock = VirtualClock()
    deadlines = Deadlines(1.0, clock)

    async def main() -> tuple[bool, int, bool]:
        watchdog = asyncio.create_task(deadlines.watch())
        task = asyncio.current_task()
        assert task is not None
        deadlines.running[0] = (clock() + 1.0, task)
        try:
            await asyncio.sleep(10)  # sync-ok: virtual time, the clock jumps
        except asyncio.CancelledError:
            first = deadlines.expired(0, task)
            again = deadlines.expired(0, task)
        del deadlines.running[0]
        watchdog.cancel()
        return first, task.cancelling(), again

    expired, cancelling, expired_again = run_virtual(main(), clock)
    assert expired and cancelling == 0, "the watchdog's cancel is taken back"
    assert not expired_again, "a cut is reported once"


def test_a_cancel_from_elsewhere_is_not_a_timeout():
    clock = VirtualClock()
    deadlines = Deadlines(1.0, clock)

    async def main() -> bool:
        watchdog = asyncio.create_task(deadlines.watch())
        cell = asyncio.create_task(_cell(deadlines, clock, 0, timeout_s=5.0, work_s=10.0))
        await asyncio.sleep(1.0)  # sync-ok: virtual time, the clock jumps
        cell.cancel()
        try:
            await cell
        except asyncio.CancelledError:
            return True
        finally:
            watchdog.cancel()
        return False

    assert run_virtual(main(), clock), "the CancelledError went on"
