"""engine/gc_tuning.py: holders nest and interleave; the original settings come back only when the last leaves."""

from __future__ import annotations

import gc
import threading
from contextlib import ExitStack

import pytest

from treadle.engine.gc_tuning import MIN_THRESHOLDS, GcTuning

ORIGINAL = (700, 10, 10)  # Python's defaults: under every minimum


@pytest.fixture
def tuning():
    """A fresh GcTuning over known thresholds; the process's own settings are put back afterwards."""
    before = gc.get_threshold()
    was_frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    gc.set_threshold(*ORIGINAL)
    yield GcTuning()
    gc.set_threshold(*before)
    if was_frozen:
        gc.freeze()


def assert_tuned() -> None:
    assert gc.get_threshold() == MIN_THRESHOLDS
    assert gc.get_freeze_count() > 0


def assert_restored() -> None:
    assert gc.get_threshold() == ORIGINAL
    assert gc.get_freeze_count() == 0


def test_nested_holders_restore_when_the_outer_one_leaves(tuning):
    with tuning.held():
        assert_tuned()
        with tuning.held():
            assert_tuned()
            assert tuning.depth == 2
        assert_tuned()  # the inner holder's exit leaves the outer one's settings in force
    assert_restored()
    assert tuning.depth == 0


def test_interleaved_holders_restore_when_the_last_one_leaves(tuning):
    run, ui = ExitStack(), ExitStack()
    run.enter_context(tuning.held())
    ui.enter_context(tuning.held())
    run.close()  # the first in leaves first: the other still holds
    assert_tuned()
    ui.close()
    assert_restored()


def test_holders_on_two_threads(tuning):
    """The engine thread and a UI's thread hold it at once, in either order."""
    entered, leave, left = threading.Event(), threading.Event(), threading.Event()

    def engine() -> None:
        with tuning.held():
            entered.set()
            leave.wait()
        left.set()

    thread = threading.Thread(target=engine)
    thread.start()
    assert entered.wait(10)
    with tuning.held():
        leave.set()
        assert left.wait(10)
        assert_tuned()
    thread.join(10)
    assert_restored()


def test_higher_thresholds_are_kept_and_restored(tuning):
    gc.set_threshold(50_000, 5, 1_000)
    with tuning.held():
        assert gc.get_threshold() == (50_000, MIN_THRESHOLDS[1], 1_000)
    assert gc.get_threshold() == (50_000, 5, 1_000)


def test_an_error_inside_still_leaves(tuning):
    with pytest.raises(ValueError), tuning.held():
        raise ValueError("boom")
    assert_restored()


def test_exit_without_enter_is_an_error(tuning):
    with pytest.raises(RuntimeError, match="more often than entered"):
        tuning.exit()
