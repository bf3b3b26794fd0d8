"""Failure policy: backoff with jitter, which errors are retried, the early-stop window, failure records."""

from __future__ import annotations

import random

import pytest

from treadle.engine.errors import CellError, FatalRunError, RetryableCellError
from treadle.engine.policy import (
    MAX_MESSAGE,
    CellFailure,
    ErrorWindow,
    NoWindow,
    RetryPolicy,
    error_message,
    is_rate_limit,
    is_retryable,
)


class FixedDraw(random.Random):
    """A random generator whose every draw is `value` (0 gives the shortest jitter, 0.999 the longest)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("attempt", "base"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (9, 30.0)])
def test_backoff_doubles_per_attempt_up_to_its_cap_with_jitter_from_half_to_one_and_a_half(attempt, base):
    policy = RetryPolicy(backoff_s=2.0, max_backoff_s=30.0)
    assert policy.delay(attempt, None, FixedDraw(0.0)) == pytest.approx(0.5 * base)
    assert policy.delay(attempt, None, FixedDraw(0.5)) == pytest.approx(base)
    assert policy.delay(attempt, None, FixedDraw(0.999)) == pytest.approx(1.499 * base)


def test_backoff_jitter_comes_from_the_run_seed():
    policy = RetryPolicy(backoff_s=1.0)
    first = [policy.delay(a, None, random.Random(7)) for a in (1, 2, 3)]
    again = [policy.delay(a, None, random.Random(7)) for a in (1, 2, 3)]
    assert first == again
    assert all(0.5 * 2 ** (a - 1) <= d < 1.5 * 2 ** (a - 1) for a, d in zip((1, 2, 3), first, strict=True))


def test_a_retry_after_longer_than_the_backoff_is_waited_in_full_and_a_shorter_one_changes_nothing():
    policy = RetryPolicy(backoff_s=1.0)
    assert policy.delay(1, 45.0, FixedDraw(0.5)) == 45.0
    assert policy.delay(3, 0.5, FixedDraw(0.5)) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("error", "retryable", "rate_limit"),
    [
        (TimeoutError(), True, False),
        (RetryableCellError("connection reset"), True, False),
        (RetryableCellError("slow down", status=429), True, True),
        (RetryableCellError("busy", status=503, retry_after=2.0), True, True),
        (RetryableCellError("unavailable", status=503), True, False),
        (CellError("bad request", status=400), False, False),
        (ValueError("a bug in the function"), False, False),
        (FatalRunError("no such model"), False, False),
    ],
)
def test_which_errors_are_retried_and_which_ask_to_wait(error, retryable, rate_limit):
    assert is_retryable(error) is retryable
    assert is_rate_limit(error) is rate_limit


def test_error_messages_are_one_line_cut_to_a_length_or_the_class_name():
    assert error_message(ValueError("bad\n   value\tthere")) == "bad value there"
    long = error_message(ValueError("x" * 2000))
    assert len(long) == MAX_MESSAGE and long.endswith("…")
    assert error_message(TimeoutError()) == "TimeoutError"


def test_the_window_waits_for_size_attempts_before_it_can_stop_a_run():
    window = ErrorWindow(size=4, threshold=0.5)
    assert not window.record_failure()
    assert not window.record_failure(), "2 of 2 attempts failed, but fewer than 4 were made"
    window.attempts += 1
    assert window.record_failure(), "3 of the last 4 failed: at least half"


def test_the_window_stops_at_its_threshold_and_not_below():
    window = ErrorWindow(size=10, threshold=0.3)
    window.attempts += 8
    assert not window.record_failure()
    assert not window.record_failure(), "2 of 10 failed, under 30%"
    assert window.failed == 2
    assert window.record_failure(), "3 of the last 10 failed"


def test_failures_older_than_the_window_are_forgotten():
    window = ErrorWindow(size=4, threshold=0.5)
    window.record_failure()
    window.record_failure()
    window.attempts += 3  # successes push both failures out of the last 4 attempts
    assert not window.record_failure()
    assert window.failed == 1


def test_clearing_the_window_starts_the_count_again():
    window = ErrorWindow(size=2, threshold=1.0)
    window.record_failure()
    window.clear()
    assert (window.attempts, window.failed) == (0, 0)
    assert not window.record_failure()
    assert window.record_failure()


def test_no_window_never_stops_a_run():
    window = NoWindow()
    assert not any(window.record_failure() for _ in range(100))


def test_a_failure_record_is_the_failures_jsonl_line():
    failure = CellFailure(row=3, column="a", error_class="ValueError", message="bad", attempts=2, retryable=True)
    assert failure.record() == {
        "row": 3,
        "column": "a",
        "error_class": "ValueError",
        "message": "bad",
        "attempts": 2,
        "action": "fail",
    }
