"""ModelRate on an injected clock: the pace it learns from refusals and headers, its holds and budgets."""

from __future__ import annotations

import math

import pytest

from treadle.engine.limits import Limit
from treadle.engine.rate_headers import LimitHeaders
from treadle.engine.rate_limits import ModelRate


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A token bucket endpoint like the simulator's: `rate` requests a second, `burst` at once."""

    def __init__(self, rate: float, burst: float, clock: Clock) -> None:
        self.rate, self.capacity, self.level, self.updated, self.clock = rate, burst, burst, clock(), clock

    def admit(self) -> bool:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        if self.level >= 1:
            self.level -= 1
            return True
        return False


def drive(rate: ModelRate, endpoint: Endpoint, clock: Clock, seconds: float, latency: float = 0.2) -> dict[str, int]:
    """Start requests whenever `rate` lets them (always work waiting) for `seconds` of fake time; a
    refusal comes back at once, an admitted request after `latency`."""
    answers: list[tuple[float, float]] = []  # (when the answer arrives, when it was sent)
    counts = {"sent": 0, "refused": 0}
    end = clock.now + seconds
    while clock.now < end:
        for due, sent in [a for a in answers if a[0] <= clock.now]:
            answers.remove((due, sent))
            rate.finished()
            rate.answered(sent, 200, None, None)
        delay = rate.start_delay(clock.now)
        if delay == 0:
            rate.started(clock.now)
            counts["sent"] += 1
            if endpoint.admit():
                answers.append((clock.now + latency, clock.now))
            else:
                counts["refused"] += 1
                rate.finished()
                rate.answered(clock.now, 429, (1 - endpoint.level) / endpoint.rate, None)
            continue
        next_answer = min((a[0] for a in answers), default=math.inf)
        clock.now = min(clock.now + delay, next_answer, end)
    return counts


def start_until(rate: ModelRate, clock: Clock, end: float, tokens_used: float | None = None) -> int:
    """Start a request (answered at once) whenever `rate` lets one start, until `end`; how many started."""
    started = 0
    while clock.now < end:
        delay = rate.start_delay(clock.now)
        if delay:
            clock.now += delay
            continue
        rate.started(clock.now)
        rate.finished()
        rate.answered(clock.now, 200, None, None, tokens_used)
        started += 1
    return started


def test_untold_it_finds_the_endpoints_rate_with_few_refusals():
    clock = Clock()
    rate = ModelRate(Limit("model:m", 256), rpm=None, tpm=None, adaptive=True, clock=clock)
    endpoint = Endpoint(rate=20.0, burst=40, clock=clock)
    counts = drive(rate, endpoint, clock, seconds=60)
    assert counts["refused"] / counts["sent"] < 0.02, counts
    assert counts["sent"] - counts["refused"] >= 0.97 * (40 + 20 * 60), counts  # the endpoint kept busy
    assert rate.view(clock.now).source == "learned"
    assert 0.9 * 1200 <= rate.view(clock.now).paced_rpm <= 1.05 * 1200
    reasons = [c.reason for c in rate.changes]
    assert reasons and all(r.startswith("429 from endpoint") for r in reasons)


def test_the_pace_falls_after_refusals_and_climbs_back_when_they_stop():
    clock = Clock()
    rate = ModelRate(Limit("model:m", 256), rpm=None, tpm=None, adaptive=True, clock=clock)
    endpoint = Endpoint(rate=20.0, burst=40, clock=clock)
    drive(rate, endpoint, clock, seconds=20)
    learned = rate.view(clock.now).paced_rpm
    endpoint.rate = 40.0  # the provider raised the limit
    counts = drive(rate, endpoint, clock, seconds=120)
    assert rate.view(clock.now).paced_rpm > 1.15 * learned, (learned, rate.view(clock.now))
    assert counts["refused"] / counts["sent"] < 0.02


def test_a_told_rpm_paces_starts_and_nothing_is_refused():
    clock = Clock()
    rate = ModelRate(Limit("model:m", 256), rpm=600, tpm=None, adaptive=True, clock=clock)
    endpoint = Endpoint(rate=10.0, burst=20, clock=clock)
    counts = drive(rate, endpoint, clock, seconds=30)
    assert counts["refused"] == 0
    assert 295 <= counts["sent"] <= 302


def test_headers_give_the_limit_before_any_refusal():
    clock = Clock()
    rate = ModelRate(Limit("model:m", 256), rpm=None, tpm=None, adaptive=True, clock=clock)
    rate.started(clock.now)
    rate.finished()
    headers = LimitHeaders.read(
        {
            "x-ratelimit-limit-requests": "1200",
            "x-ratelimit-remaining-requests": "39",
            "x-ratelimit-reset-requests": "50ms",
        }
    )
    rate.answered(clock.now, 200, None, headers)
    view = rate.view(clock.now)
    assert (view.source, view.paced_rpm) == ("headers", 1200.0)
    assert [c.reason for c in rate.changes] == ["x-ratelimit headers"]


def test_a_refusal_holds_every_start_until_its_retry_after():
    clock = Clock()
    rate = ModelRate(Limit("model:m", 8), rpm=None, tpm=None, adaptive=False, clock=clock)
    assert rate.start_delay(clock.now) == 0
    rate.started(clock.now)
    rate.finished()
    rate.answered(clock.now, 503, 1.5, None)
    assert rate.start_delay(clock.now) == pytest.approx(1.5)
    clock.now += 1.5
    assert rate.start_delay(clock.now) == 0
    assert rate.view(clock.now).rate_limited_last_min == 1


def test_the_ceiling_is_never_exceeded_and_lowering_it_lowers_the_adaptive_value():
    clock = Clock()
    limit = Limit("model:m", 4)
    rate = ModelRate(limit, rpm=None, tpm=None, adaptive=True, clock=clock)
    for _ in range(4):
        clock.now += 1
        assert rate.start_delay(clock.now) == 0
        rate.started(clock.now)
    assert rate.start_delay(clock.now) == math.inf
    limit.total = 2
    rate.set_ceiling(2)
    assert rate.view(clock.now).concurrency == 2


def test_a_told_tpm_paces_by_the_tokens_requests_use():
    clock = Clock()
    rate = ModelRate(Limit("model:m", 256), rpm=None, tpm=6000, adaptive=False, clock=clock)
    rate.estimate_tokens(100)
    sent = start_until(rate, clock, 130, tokens_used=100)  # 100 tokens a second, 100 a request: one a second
    assert 30 <= sent <= 32


def test_budgets_set_while_the_run_goes_pace_starts_from_then_on():
    clock = Clock()
    rate = ModelRate(Limit("model:m", 256), rpm=None, tpm=None, adaptive=False, clock=clock)
    assert rate.start_delay(clock.now) == 0 and rate.view(clock.now).paced_rpm is None
    rate.set_budgets(rpm=120, tpm=None)
    assert 20 <= start_until(rate, clock, 110) <= 22  # 2 a second from now on
    assert (rate.view(clock.now).source, rate.view(clock.now).paced_rpm) == ("rpm", 120.0)
    rate.set_budgets(rpm=None, tpm=None)
    assert rate.view(clock.now).paced_rpm is None and rate.start_delay(clock.now) == 0
    assert rate.changes[-1].reason == "budgets set: rpm -, tpm -"
