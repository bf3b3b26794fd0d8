"""One adaptive limit per model across the workers of `--workers N`: an endpoint's limit is global.

Each worker's `FollowerRate` paces its own requests but adapts nothing: it notes every start and every
answer (429s, Retry-After, headers, token use) and sends them in its ticks. The parent's `SharedRates`
replays what all workers noted, in time order, into the run's own `ModelRate` of each model (the same
rule as one process: slow start, the pace learned from 429s, the adaptive concurrency, holds) and
sends each worker its share of the result. So N workers meet an endpoint's limit as one process does,
and the UIs, events and summary.json show one adaptive value per model: the parent's.

A worker still reacts to its own refusals at once (it holds for their Retry-After, empties its pace's
bucket and halves it) and tells the parent in a tick sent then; the parent's replay, once every worker
has told what came before, cuts the shared pace and sends the new shares at once. The slow start's pace
doubles in each worker between shares, on the parent's schedule.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from treadle.engine.rate_counters import Bucket
from treadle.engine.rate_headers import LimitHeaders
from treadle.engine.rate_limits import PROBE_END_RATE, PROBE_STEP_S, Change, ModelRate
from treadle.engine.workers.messages import Answer, RateShare, RateSignals, ShareRates, shares

LOCAL_CUT_S = 0.3
"""A worker that meets a rate limit halves its own pace at once and keeps under that for this long: the
parent, which adapts the pace from every worker's answers, has heard of the refusal by then (the worker
ticks at once, the others within a quarter of a second, and the parent shares out the cut at once). Not
longer: held for a second, the halved pace kept the endpoint under its limit until the next refusal, so
the parent never measured the limit and its guessed pace rose to the next refusal every second or so."""


class FollowerRate(ModelRate):
    """A worker's part of a model limit: paced by the parent's shares, noting what its requests meet."""

    def __init__(self, rate: ModelRate) -> None:
        super().__init__(
            rate.limit, rpm=rate.told_rpm, tpm=rate.told_tpm, adaptive=rate.adaptive, clock=rate.now, learns=False
        )
        self._sent_times = array("d")
        self._heard: list[tuple[float, int, Answer]] = []
        self._paced = False
        self._cut: tuple[float, float] | None = None
        """(until when, the pace per second) of the cut after this worker's last rate limit."""
        self.on_refused: Callable[[], None] = lambda: None
        """Called at each rate-limit answer: the worker tells the parent without waiting for its next tick."""
        self._doubling_at: float | None = None
        """When the slow start's pace (the share) doubles next here, as the parent's does between two shares
        (math.inf: PROBE_STEP_S after the first start); None: the pace is not the slow start's."""

    def start_delay(self, now: float) -> float:
        if self._doubling_at is not None and now >= self._doubling_at:
            self._double(now)
        wait = super().start_delay(now)
        if 0 < wait < math.inf and self.hold_until <= now:
            self._paced = True
        return wait

    def started(self, now: float) -> None:
        if self._doubling_at == math.inf:
            self._doubling_at = now + PROBE_STEP_S
        super().started(now)
        self._sent_times.append(now)

    def _double(self, now: float) -> None:
        """The slow start's pace doubles every PROBE_STEP_S here too: waiting a quarter of a second for each
        share kept a worker's pace 2-6 times under the parent's while it rose (half a second at 32/s)."""
        requests = self.requests
        while requests is not None and self._doubling_at is not None and now >= self._doubling_at:
            requests.refill(self._doubling_at)
            requests.rate *= 2
            self._doubling_at = self._doubling_at + PROBE_STEP_S if requests.rate < PROBE_END_RATE else None

    def answered(
        self,
        sent: float,
        status: int,
        retry_after: float | None,
        headers: LimitHeaders | None,
        tokens_used: float | None = None,
    ) -> None:
        now = self.now()
        self._heard.append((now, self.limit.in_use, (sent, status, retry_after, headers, tokens_used)))
        super().answered(sent, status, retry_after, headers, tokens_used)
        refused = status == 429 or (status == 503 and retry_after is not None)
        if refused:
            self._doubling_at = None  # the slow start ends at the first limit, as the parent's will
            self.on_refused()
        if refused and self.adaptive and self.requests is not None and (self._cut is None or now >= self._cut[0]):
            self.requests.rate /= 2
            self._cut = (now + LOCAL_CUT_S, self.requests.rate)

    def take_signals(self) -> RateSignals:
        signals = RateSignals(self._sent_times.tobytes(), self._heard, self._paced)
        self._sent_times, self._heard, self._paced = array("d"), [], False
        return signals

    def follow(self, share: RateShare) -> None:
        """The parent's share: the adaptive value and pace from now on, a hold another worker was told."""
        now = self.now()
        self.concurrency = max(1.0, share.concurrency)
        requests, doubles_in = share.requests, share.doubles_in
        started_own = self._doubling_at is not None and self._doubling_at < math.inf
        if not (doubles_in == math.inf and started_own):  # else the parent has heard no start yet: it goes on
            if requests is not None and self._cut is not None and now < self._cut[0]:
                requests, doubles_in = (min(requests[0], self._cut[1]), requests[1]), None
            self.requests = _bucket(self.requests, requests, now)
            self._doubling_at = None if doubles_in is None else now + doubles_in
        self.tokens = _bucket(self.tokens, share.tokens, now)
        self.hold_until = max(self.hold_until, now + share.held_s)
        self.source = share.source


def _bucket(bucket: Bucket | None, shared: tuple[float, float] | None, now: float) -> Bucket | None:
    """A pace's bucket at its share's rate; what it holds is the worker's own (its starts, its refusals)."""
    if shared is None:
        return None
    rate, capacity = shared
    if bucket is None:
        return Bucket(rate, capacity, now)
    bucket.refill(now)
    bucket.rate, bucket.capacity = rate, capacity
    return bucket


def on_replay_clock(
    rates: dict[str, ModelRate], clock: ReplayClock, on_change: Callable[[str, Change], None]
) -> dict[str, ModelRate]:
    """The parent's model rates, as the run built them but on `clock`: they hear the workers' requests
    at the times they went."""
    return {
        key: ModelRate(
            rate.limit,
            rpm=rate.told_rpm,
            tpm=rate.told_tpm,
            adaptive=rate.adaptive,
            clock=clock,
            on_change=functools.partial(on_change, key),
        )
        for key, rate in rates.items()
    }


class ReplayClock:
    """The parent's models' clock: the time of the worker's start or answer being replayed, else now."""

    def __init__(self) -> None:
        self.at: float | None = None

    def __call__(self) -> float:
        return time.perf_counter() if self.at is None else self.at


@dataclass
class _Heard:
    """What the workers noted about one model and the parent has not replayed yet, in the parent's clock."""

    events: list[_Event] = field(default_factory=list)
    """Sorted by time."""
    paced: bool = False
    in_use: dict[int, int] = field(default_factory=dict)
    """worker -> its requests in flight at its last answer replayed."""


_Event = tuple[float, int, int, int, Answer | None]
"""(time, seq, worker, its requests in flight then, the answer or None for a start)."""


class SharedRates:
    """The parent's side: every worker's signals replayed into the run's ModelRates, shares sent back."""

    def __init__(self, rates: dict[str, ModelRate], clock: ReplayClock) -> None:
        self.rates = rates
        self.clock = clock
        self._heard = {key: _Heard() for key in rates}
        self._upto: dict[int, float] = {}
        """worker -> the parent's time up to which it has told everything (math.inf once it has ended)."""
        self._seq = itertools.count()
        self._shared_change = {key: rate.last_change for key, rate in rates.items()}
        """model -> its last change as of the last shares sent."""

    def joined(self, worker: int) -> None:
        """A worker started: nothing is replayed past what it has told (its first tick)."""
        self._upto[worker] = -math.inf

    def heard(self, worker: int, sent_at: float, signals: dict[str, RateSignals], offset: float = 0.0) -> None:
        """A worker's tick, sent at `sent_at` on its clock, `offset` behind the parent's (worker_clocks.py):
        its signals wait until every worker has told what came before them, so each model hears its
        requests in the order they went."""
        self._upto[worker] = sent_at + offset
        for key, told in signals.items():
            heard = self._heard.get(key)
            if heard is None:
                continue
            seq = self._seq
            new: list[_Event] = [(t + offset, next(seq), worker, 0, None) for t in array("d", told.starts)]
            new += [
                (at + offset, next(seq), worker, in_use, (answer[0] + offset, *answer[1:]))
                for at, in_use, answer in told.answers
            ]
            heard.events = sorted(heard.events + new) if heard.events else sorted(new)
            heard.paced |= told.paced

    def changed(self) -> bool:
        """Whether a model's pace or adaptive value went down since the last shares."""
        return any(rate.last_change > self._shared_change[key] for key, rate in self.rates.items())

    def ended(self, worker: int) -> None:
        """The worker has told all it will (its run ended, or it died): none of its requests in flight."""
        self._upto[worker] = math.inf
        for heard in self._heard.values():
            heard.in_use.pop(worker, None)

    def replay(self) -> None:
        """Replay what every worker has told up to the same time."""
        upto = min(self._upto.values(), default=-math.inf)
        for key, heard in self._heard.items():
            cut = bisect.bisect_right(heard.events, (upto, math.inf))
            due, heard.events = heard.events[:cut], heard.events[cut:]
            if due:
                self._replay(self.rates[key], heard, due)

    def _replay(self, rate: ModelRate, heard: _Heard, events: list[_Event]) -> None:
        """Each answer is heard with the requests in flight then over all workers (each as of its last
        answer): the slow start ends at them, and the adaptive value grows only while they fill it."""
        limit = rate.limit
        in_use, peak = limit.in_use, limit.peak
        last_change = rate.last_change
        try:
            for t, _, worker, worker_in_use, answer in events:
                self.clock.at = t
                if answer is None:
                    rate.started(t)
                    limit.release()  # the worker holds the slot
                else:
                    heard.in_use[worker] = worker_in_use
                    limit.in_use = sum(heard.in_use.values())
                    rate.answered(*answer)
                    if rate.last_change != last_change:  # the workers hear of it with the next shares
                        rate.change_not_yet_heard()
                        last_change = rate.last_change
        finally:
            self.clock.at = None
            limit.in_use, limit.peak = in_use, peak  # the workers' own counts are the run's

    def shares(self, key: str, workers: int) -> list[RateShare]:
        """Each of `workers` workers' share of a model's adaptive value, pace and hold now."""
        rate, heard = self.rates[key], self._heard[key]
        now = rate.now()
        if rate.last_change > self._shared_change[key]:
            # The workers send at the old pace until these shares reach them: the refusals of what they
            # sent until then are the same news, not a reason to cut again (cutting for each, heard in
            # the same tick as the cut or after the shares went out, halved the pace 3-4 times in half a
            # second, and a run's pace stayed at half the endpoint's limit for seconds).
            rate.change_reached_senders(now)
            self._shared_change[key] = rate.last_change
        if heard.paced:
            rate.paced_elsewhere(now)
            heard.paced = False
        fraction = 1.0 / workers
        requests = _pace_share(rate.requests, fraction)
        probe = rate.probe(now)
        doubles_in = None
        if probe is not None:  # the slow start: its pace shared out too, and when it doubles
            probing = _pace_share(probe, fraction)
            assert probing is not None
            if requests is None or probing[0] < requests[0]:
                requests, doubles_in = probing, rate.next_doubling() - now
        share = RateShare(
            concurrency=0.0,
            requests=requests,
            tokens=_pace_share(rate.tokens, fraction),
            held_s=max(0.0, rate.hold_until - now),
            source=rate.source,
            doubles_in=doubles_in,
        )
        total = min(rate.limit.total, int(rate.concurrency))
        return [replace(share, concurrency=float(n)) for n in shares(total, workers)]

    def messages(self, running: int, busy: int) -> list[ShareRates]:
        """Each of `running` workers' shares of every model: split between the `busy` ones (holding row
        groups); one without any gets a busy one's share too, for when it is given some."""
        busy = max(1, min(busy, running))
        split = {key: self.shares(key, busy) for key in self.rates}
        return [ShareRates({key: shares[min(i, busy - 1)] for key, shares in split.items()}) for i in range(running)]


def _pace_share(bucket: Bucket | None, fraction: float) -> tuple[float, float] | None:
    return None if bucket is None else (bucket.rate * fraction, max(1.0, bucket.capacity * fraction))
