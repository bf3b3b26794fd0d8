"""The parent's shared adaptive limit (workers/shared_rates.py) on made-up worker signals: no processes."""

from __future__ import annotations

import math
import time
from array import array

from treadle.engine.limits import Limit
from treadle.engine.rate_limits import PROBE_START, PROBE_STEP_S, ModelRate
from treadle.engine.workers.messages import RateShare, RateSignals, ShareRates
from treadle.engine.workers.pool import WorkerHandle
from treadle.engine.workers.shared_limits import SharedLimits
from treadle.engine.workers.shared_rates import FollowerRate, ReplayClock, SharedRates, on_replay_clock

KEY = "model:m"
ENDPOINT_RATE = 10.0
"""Requests per second the made-up endpoint admits (a token bucket holding one request)."""


def _leader() -> tuple[ModelRate, SharedRates]:
    clock = ReplayClock()
    built = ModelRate(Limit(KEY, 64), rpm=None, tpm=None, adaptive=True, clock=time.perf_counter)
    rates = on_replay_clock({KEY: built}, clock, lambda key, change: None)
    shared = SharedRates(rates, clock)
    shared.joined(0)
    shared.joined(1)
    return rates[KEY], shared


def _two_workers_over_the_limit(start: float, seconds: float) -> dict[int, RateSignals]:
    """Each worker sends 10 requests a second (20 in all, twice what the endpoint admits); a refusal
    comes back at once, an answer after 50 ms."""
    sends = sorted((start + i / 20.0, i % 2) for i in range(int(seconds * 20)))
    level, updated = 1.0, start
    starts: dict[int, list[float]] = {0: [], 1: []}
    answers: dict[int, list] = {0: [], 1: []}
    for t, worker in sends:
        level, updated = min(1.0, level + (t - updated) * ENDPOINT_RATE), t
        admitted = level >= 1.0
        level -= 1.0 if admitted else 0.0
        starts[worker].append(t)
        at = t + (0.05 if admitted else 0.001)
        answers[worker].append((at, 1, (t, 200 if admitted else 429, None, None, None)))
    return {w: RateSignals(array("d", starts[w]).tobytes(), answers[w], paced=False) for w in (0, 1)}


def test_the_parent_learns_the_endpoints_rate_from_both_workers_and_splits_it():
    leader, shared = _leader()
    now = time.perf_counter()
    signals = _two_workers_over_the_limit(now - 3.0, 2.0)
    shared.heard(0, now, {KEY: signals[0]})
    shared.replay()
    assert leader.started_total == 0, "replayed before the other worker told what came first"
    shared.heard(1, now, {KEY: signals[1]})
    shared.replay()
    assert leader.started_total == 40 and leader.refused_total > 0
    assert leader.source == "learned" and leader.changes
    assert leader.requests is not None
    assert 0.7 * ENDPOINT_RATE <= leader.requests.rate <= 1.1 * ENDPOINT_RATE
    first, second = shared.shares(KEY, 2)
    assert first.requests is not None and second.requests is not None
    assert first.requests[0] + second.requests[0] == leader.requests.rate
    assert first.source == "learned"


def test_a_worker_follows_its_share_and_a_hold_told_to_another():
    _, shared = _leader()
    now = time.perf_counter()
    # Worker 0 was told to wait 5 s; worker 1 heard nothing of it.
    told = RateSignals(array("d", [now - 0.2]).tobytes(), [(now - 0.1, 1, (now - 0.2, 429, 5.0, None, None))], False)
    shared.heard(0, now, {KEY: told})
    shared.heard(1, now, {KEY: RateSignals(b"", [], False)})
    shared.replay()
    follower = FollowerRate(ModelRate(Limit(KEY, 32), rpm=None, tpm=None, adaptive=True, clock=time.perf_counter))
    follower.follow(shared.shares(KEY, 2)[1])
    assert follower.concurrency == 1.0  # the slow start ended at what was in flight: one request
    assert follower.requests is not None and follower.source == "learned"
    assert 4.0 < follower.hold_until - time.perf_counter() <= 5.0
    assert follower.start_delay(time.perf_counter()) > 4.0
    # What the follower meets goes to the parent, which adapts the limit; the follower only halves its
    # own pace at once, and keeps under that until the parent has heard.
    paced = follower.requests.rate
    follower.started(time.perf_counter())
    follower.answered(time.perf_counter(), 429, None, None)
    assert follower.changes == [] and follower.concurrency == 1.0
    assert follower.requests.rate == paced / 2
    follower.follow(shared.shares(KEY, 2)[1])
    assert follower.requests.rate == paced / 2
    signals = follower.take_signals()
    assert len(array("d", signals.starts)) == 1 and [a[2][1] for a in signals.answers] == [429]
    assert follower.take_signals().answers == []


def _refused(sent: float) -> RateSignals:
    return RateSignals(array("d", [sent]).tobytes(), [(sent, 1, (sent, 429, None, None, None))], False)


def _tick(shared: SharedRates, signals: dict[int, RateSignals]) -> None:
    """Both workers tick now (an empty tick for one with nothing to tell), and the parent replays."""
    told_at = time.perf_counter()
    for worker in (0, 1):
        shared.heard(worker, told_at, {KEY: signals.get(worker, RateSignals(b"", [], False))})
    shared.replay()


def test_refusals_sent_before_the_workers_heard_of_a_cut_cut_no_further():
    leader, shared = _leader()
    start = time.perf_counter() - 5.0
    _tick(shared, {0: _refused(start)})
    assert len(leader.changes) == 1
    shared.shares(KEY, 2)
    # Worker 1 went on at the old pace until the parent's shares told it of the cut: its refusals from
    # then, heard after the shares went out, say what the first one said. Cutting again for each had
    # halved the pace 3-4 times in half a second.
    _tick(shared, {1: _refused(start + 0.1)})
    _tick(shared, {1: _refused(start + 0.2)})
    assert len(leader.changes) == 1
    # A refusal at the pace the workers were told is news.
    _tick(shared, {0: _refused(time.perf_counter())})
    assert len(leader.changes) == 2


def test_refusals_heard_in_the_same_tick_as_a_cut_cut_no_further():
    leader, shared = _leader()
    start = time.perf_counter() - 5.0
    # Both workers went on at the old pace after the first refusal: nobody had told them of a cut yet.
    first, second, third = (_refused(start + dt) for dt in (0.0, 0.1, 0.2))
    both = RateSignals(first.starts + third.starts, first.answers + third.answers, False)
    _tick(shared, {0: both, 1: second})
    assert len(leader.changes) == 1
    shared.shares(KEY, 2)
    _tick(shared, {1: _refused(start + 0.3)})  # sent before the shares went out: the same news
    assert len(leader.changes) == 1
    _tick(shared, {0: _refused(time.perf_counter())})  # at the pace the workers were told: news
    assert len(leader.changes) == 2


def test_the_parent_doubles_the_slow_start_from_the_first_start_a_worker_made():
    _, shared = _leader()
    now = time.perf_counter()
    shared.heard(0, now, {KEY: RateSignals(array("d", [now - 0.35]).tobytes(), [], False)})
    shared.heard(1, now, {KEY: RateSignals(b"", [], False)})
    shared.replay()
    share = shared.shares(KEY, 2)[0]
    # Doubled three times since that start (at 0.1, 0.2 and 0.3 s), not from the parent's first share on.
    assert share.requests is not None and share.requests[0] == PROBE_START[1] * 2**3 / 2
    assert share.doubles_in is not None and 0 < share.doubles_in <= PROBE_STEP_S


def _follower(clock: list[float]) -> FollowerRate:
    return FollowerRate(ModelRate(Limit(KEY, 512), rpm=None, tpm=None, adaptive=True, clock=lambda: clock[0]))


def _slow_start_share(rate: float, doubles_in: float) -> RateShare:
    return RateShare(512.0, requests=(rate, 1.0), tokens=None, held_s=0.0, source=None, doubles_in=doubles_in)


def test_a_worker_doubles_its_slow_start_share_between_shares_until_a_rate_limit():
    clock = [0.0]
    follower = _follower(clock)
    follower.follow(_slow_start_share(32.0, 0.1))
    clock[0] = 0.35
    follower.start_delay(clock[0])
    assert follower.requests is not None and follower.requests.rate == 32.0 * 2**3
    follower.started(clock[0])
    follower.answered(clock[0], 429, None, None)  # the slow start ends here: no more doubling
    clock[0] = 1.0
    follower.start_delay(clock[0])
    assert follower.requests.rate == 32.0 * 2**3 / 2


def test_a_worker_keeps_its_own_slow_start_while_the_parent_has_heard_no_start():
    clock = [0.0]
    follower = _follower(clock)
    follower.follow(_slow_start_share(32.0, math.inf))  # from its first start on
    follower.start_delay(0.0)
    follower.started(0.0)
    clock[0] = 0.25
    follower.start_delay(clock[0])
    assert follower.requests is not None and follower.requests.rate == 128.0
    follower.follow(_slow_start_share(32.0, math.inf))
    clock[0] = 0.35
    follower.start_delay(clock[0])
    assert follower.requests.rate == 256.0


def test_a_cut_the_parent_replays_goes_to_every_worker_at_once():
    leader, shared = _leader()
    workers = [WorkerHandle(index=0, outstanding={0}), WorkerHandle(index=1, outstanding={1})]
    limits = SharedLimits({KEY: leader.limit}, {KEY: leader}, shared, workers)
    now = time.perf_counter()
    shared.heard(0, now, {KEY: _refused(now - 0.1)})
    shared.heard(1, now, {KEY: RateSignals(b"", [], False)})
    limits.adapt()  # not waiting for the next round of shares, a quarter of a second later
    for handle in workers:
        message = handle.outbox.get_nowait()
        assert isinstance(message, ShareRates) and message.shares[KEY].requests is not None
    limits.adapt()  # nothing new: nothing sent
    assert all(handle.outbox.empty() for handle in workers)
