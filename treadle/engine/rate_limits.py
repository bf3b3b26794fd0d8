"""Each model's request rate: the ceiling a person sets, budgets the user knows, and what treadle learns.

A `ModelRate` answers one question for the scheduler: may a request to this model start now, and if
not, when? Three layers decide, the lowest wins:
- the ceiling: `max_parallel` (the slider), never exceeded;
- budgets: `rpm`/`tpm` from the pipeline file, or learned from `x-ratelimit-*` headers (a limit per
  minute, what remains now), kept as token buckets that pace starts;
- the adaptive part (`adaptive: true`): a concurrency that starts small and grows while calls succeed
  (slow start, like TCP), and a pace learned from rate-limit answers. A 429 (or a 503 that asks to
  wait) stops new starts until its Retry-After, and once per window (for requests sent after the last
  change, not once per answer) lowers the pace to the rate the endpoint admitted between two
  rate-limit answers: a token bucket that refuses a request is empty, so what it admitted between two
  refusals is its rate times the time between them. While calls succeed and the pace is what holds
  starts back, the pace creeps up to find a raised limit.

Every answer of the endpoint reaches `answered` (from the HTTP layer, for llm columns and `ctx.llm`
alike); the scheduler calls `start_delay`/`started`/`finished` around each request. All on the engine loop.
Its parts: token buckets and per-second sums in rate_counters.py, what the headers say in rate_headers.py.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from treadle.engine.limits import Limit
from treadle.engine.rate_counters import HISTORY_S, Bucket, PerSecond
from treadle.engine.rate_headers import LimitHeaders

PROBE_START = (4, 64.0)
"""An adaptive model's first starts: 4 at once, then at most 64 a second, a rate that doubles every
PROBE_STEP_S until PROBE_END_RATE or the first rate limit. A refusal comes back at once, long before
an answer, so starts spaced even a millisecond apart stop within a few refused requests when a
limit is reached; an unlimited endpoint is past any ceiling in well under a second."""
PROBE_STEP_S = 0.1
PROBE_END_RATE = 16_384.0
CREEP_PER_S = 0.0025
"""How fast a measured pace rises (share per second) while calls succeed and the pace holds starts back."""
CREEP_UNMEASURED_PER_S = 0.1
"""The same for a pace only guessed (halved on refusals that came too close to measure the rate)."""
MEASURE_MIN_S = 0.1
"""The shortest time between two rate-limit answers from which the endpoint's rate is measured."""
MEASURE_CLEAN_S = 1.0
"""A refusal this long after the last change comes from a pace just over the endpoint's rate."""
PRECISE_COUNT = 20
"""Admitted requests between two rate-limit answers that make the measured rate precise (to 5%); a
pace measured on fewer rises fast (CREEP_UNMEASURED_PER_S) until the next refusal measures it better."""
MEASURE_MAX_S = 30.0
"""Rate-limit answers older than this no longer count: the endpoint's limit may have changed."""
SENT_HISTORY_S = 10.0
"""Send times are kept this long: enough for the requests still in flight and the last second's rate."""
NO_HINT_HOLD_S = 0.5
"""Starts stop this long after a rate-limit answer without Retry-After (doubling while they repeat)."""
_MAX_HOLD_S = 60.0
PACE_SLACK_S = 0.02
_HEADROOM = 0.98
"""A learned pace sits this far under the measured rate."""


def pace_capacity(rate: float) -> float:
    """A pace's bucket holds 20 ms of its rate (at least one request): a timer that fires a little late
    loses no start, and no window of the endpoint's sees more than its rate and two requests."""
    return max(1.0, min(2.0, rate * PACE_SLACK_S))


@dataclass(frozen=True)
class RateView:
    """One model's request limits as a person watches them (in snapshots)."""

    ceiling: int
    """max_parallel: the slider."""
    concurrency: int
    """The adaptive value in force (at most the ceiling; the ceiling when not adaptive)."""
    in_flight: int
    paced_rpm: float | None
    """Requests per minute starts are paced to (told, from headers, or learned); None: not paced."""
    tpm: float | None
    """Tokens per minute starts are paced to; None: not paced by tokens."""
    source: str | None
    """Where the pace comes from: "rpm" (the file), "headers", "learned" (from 429s); None: no pace."""
    requests_per_s: float
    """Requests started over the last 10 seconds, per second."""
    tokens_per_min: float
    """Tokens used (prompt + completion) over the last minute."""
    rate_limited_last_min: int
    """Answers that asked to wait (429, 503 with Retry-After) over the last minute."""
    held_s: float
    """Seconds until a Retry-After lets new requests start (0: not held)."""
    adaptive: bool


@dataclass(frozen=True)
class Change:
    """One change of the adaptive value or pace, and why."""

    t: float
    concurrency: int
    paced_rpm: float | None
    reason: str


class ModelRate:
    """When requests to one model may start (see the module docstring)."""

    def __init__(
        self,
        limit: Limit,
        *,
        rpm: int | None,
        tpm: int | None,
        adaptive: bool,
        clock: Callable[[], float],
        on_change: Callable[[Change], None] = lambda change: None,
        learns: bool = True,
    ) -> None:
        self.limit = limit
        self.adaptive = adaptive
        self.learns = adaptive and learns
        """Whether answers change the adaptive value and pace here; not in a worker of `--workers N`,
        whose parent adapts them from every worker's answers and shares them out."""
        self._clock = clock
        self._on_change = on_change
        now = clock()
        self.concurrency = float(limit.total)
        burst, rate = PROBE_START
        self._probe = Bucket(rate, 1.0, now) if self.learns else None
        if self._probe is not None:
            self._probe.level = burst
        self._next_doubling = math.inf
        """When the probe's rate doubles next; set at the first start (a run is built before it starts)."""
        self.told_rpm = rpm
        self.told_tpm = tpm
        self.requests: Bucket | None = None
        self.tokens: Bucket | None = None
        self.source: str | None = None
        if rpm:
            self.requests = Bucket(rpm / 60.0, pace_capacity(rpm / 60.0), now)
            self.source = "rpm"
        if tpm:
            self.tokens = Bucket(tpm / 60.0, tpm / 60.0, now)
            self.source = self.source or "tpm"
        self.tokens_per_request = 0.0
        """What one request costs, learned from usage (0 until the first answer)."""
        self.hold_until = 0.0
        self._no_hint_hold = NO_HINT_HOLD_S
        self._last_change = -math.inf
        """When the pace or concurrency last went down: answers to requests sent before it say nothing new."""
        self._unheard_before = -math.inf
        """Senders elsewhere (a parent's workers) went on at the pace before the last change until then:
        a refusal of what they sent before it is the same news, and only measures the endpoint."""
        self._empty_at: deque[tuple[float, int]] = deque()
        """(send time, requests admitted before it) of recent rate-limit answers: the endpoint's bucket
        was empty then, so what it admitted between two of them is its rate times the time between."""
        self._sent: deque[float] = deque()
        self._refusals: deque[float] = deque()
        self._start_counts = PerSecond()
        self._token_use = PerSecond()
        self._last_creep = now
        self._measured = False
        self._creep_cap = math.inf
        self._starts = 0
        self._refused_count = 0
        self.changes: list[Change] = []

    # ---- the scheduler's questions -----------------------------------------------------------

    def start_delay(self, now: float) -> float:
        """0 when a request may start now; else seconds until it may (math.inf: when one finishes)."""
        limit = self.limit
        if limit.in_use >= limit.total:
            return math.inf
        if limit.in_use >= int(self.concurrency):
            return math.inf
        wait = self.hold_until - now
        if self._probe is not None:
            wait = max(wait, self._probe_wait(now))
        if self.requests is not None:
            paced = self.requests.wait_for(1.0, now)
            if paced > 0 and self.source == "learned" and self.learns:
                self._creep(now)
            wait = max(wait, paced)
        if self.tokens is not None and self.tokens_per_request:
            wait = max(wait, self.tokens.wait_for(self.tokens_per_request, now))
        return max(wait, 0.0)

    def _creep(self, now: float) -> None:
        """The learned pace holds starts back: let it rise slowly, to find the limit again if it was raised."""
        assert self.requests is not None
        dt = min(1.0, now - self._last_creep)
        if dt > 0 and self.requests.rate < self._creep_cap:
            self.requests.rate *= 1.0 + (CREEP_PER_S if self._measured else CREEP_UNMEASURED_PER_S) * dt
        self._last_creep = now

    def now(self) -> float:
        return self._clock()

    def probe(self, now: float) -> Bucket | None:
        """The slow start's bucket as it stands at `now` (its rate doubles from the first start on); None
        once it is over."""
        if self._probe is not None and self._starts:
            self._probe_wait(now)
        return self._probe

    @property
    def last_change(self) -> float:
        """When the pace or concurrency last went down (-inf: never)."""
        return self._last_change

    def change_not_yet_heard(self) -> None:
        """The last change was made here for processes that send elsewhere (a parent replaying its workers'
        answers): they go on at the old pace until `change_reached_senders`."""
        self._unheard_before = math.inf

    def change_reached_senders(self, at: float) -> None:
        """The last change reached the processes that send only at `at` (workers told by the parent): a
        refusal of what they sent before then, at the old pace, only measures the endpoint."""
        self._unheard_before = at

    def paced_elsewhere(self, now: float) -> None:
        """Starts waited for the learned pace in another process sharing this limit: it creeps up as here."""
        if self.requests is not None and self.source == "learned":
            self._creep(now)

    def next_doubling(self) -> float:
        """When the slow start's rate doubles next (math.inf: at PROBE_STEP_S after the first start)."""
        return self._next_doubling

    def _probe_wait(self, now: float) -> float:
        probe = self._probe
        assert probe is not None
        self._first_start(probe, now)
        while now >= self._next_doubling:
            probe.refill(self._next_doubling)
            probe.rate *= 2
            self._next_doubling += PROBE_STEP_S
            if probe.rate >= PROBE_END_RATE:
                self._probe = None
                return 0.0
        return probe.wait_for(1.0, now)

    def _first_start(self, probe: Bucket, now: float) -> None:
        if self._next_doubling == math.inf:
            probe.updated = now
            self._next_doubling = now + PROBE_STEP_S

    def started(self, now: float) -> None:
        self.limit.acquire()
        if self._probe is not None:  # a parent replaying its workers' starts asks no start_delay
            self._first_start(self._probe, now)
            self._probe.refill(now)
            self._probe.level -= 1.0
        if self.requests is not None:
            self.requests.refill(now)
            self.requests.level -= 1.0
        if self.tokens is not None:
            self.tokens.refill(now)
            self.tokens.level -= self.tokens_per_request
        self._sent.append(now)
        self._starts += 1
        self._start_counts.add(now, 1.0)
        while self._sent[0] < now - SENT_HISTORY_S:
            self._sent.popleft()

    def finished(self) -> None:
        self.limit.release()

    @property
    def started_total(self) -> int:
        return self._starts

    @property
    def refused_total(self) -> int:
        return self._refused_count

    # ---- what the endpoint said ----------------------------------------------------------------

    def answered(
        self,
        sent: float,
        status: int,
        retry_after: float | None,
        headers: LimitHeaders | None,
        tokens_used: float | None = None,
    ) -> None:
        """An HTTP answer to a request sent at `sent` (the clock's time)."""
        now = self._clock()
        if headers is not None and self.learns:
            self._learn_from_headers(sent, now, headers)
        if tokens_used is not None:
            self._used_tokens(now, tokens_used)
        waits = status == 429 or (status == 503 and retry_after is not None)
        if waits:
            self._refused_count += 1
            self._refused(sent, now, retry_after)
        elif 200 <= status < 300:
            self._succeeded(now)
        elif status == 503 and self.learns and sent > self._last_change:
            self._lower_concurrency(now, 0.7, "503 overloaded")

    def estimate_tokens(self, estimate: float) -> None:
        """The first request's cost, from its prompt and max_tokens, until usage says better."""
        if not self.tokens_per_request:
            self.tokens_per_request = estimate

    def _used_tokens(self, now: float, used: float) -> None:
        if self.tokens is not None and self.tokens_per_request:
            self.tokens.level -= used - self.tokens_per_request  # what the start took was an estimate
        self.tokens_per_request = used if not self.tokens_per_request else 0.8 * self.tokens_per_request + 0.2 * used
        self._token_use.add(now, used)

    def _succeeded(self, now: float) -> None:
        self._no_hint_hold = NO_HINT_HOLD_S
        if not self.learns:
            return
        ceiling = self.limit.total
        if self.concurrency < ceiling and self.limit.in_use >= int(self.concurrency) - 1:
            self.concurrency = min(float(ceiling), self.concurrency + 1.0 / max(self.concurrency, 1.0))

    def _refused(self, sent: float, now: float, retry_after: float | None) -> None:
        self._refusals.append(now)
        if retry_after is None:
            wait = self._no_hint_hold
            self._no_hint_hold = min(_MAX_HOLD_S, self._no_hint_hold * 2)
        else:
            wait = min(retry_after, _MAX_HOLD_S)
        self.hold_until = max(self.hold_until, now + wait)
        if self.requests is not None:
            self.requests.refill(now)
            self.requests.level = min(self.requests.level, 0.0)  # the endpoint's bucket is empty
        if not self.learns:
            return
        if self._probe is not None:  # the first limit: starts from now on go at the pace learned here
            self._probe = None
            self.concurrency = max(1.0, float(self.limit.in_use))
        empty_at = self._empty_at
        while empty_at and empty_at[0][0] < now - MEASURE_MAX_S:
            empty_at.popleft()
        admitted = self._admitted_before(sent)
        empty_at.append((sent, admitted))
        if sent <= self._last_change:
            return  # sent before the last change: it says nothing new
        # Between two empty moments the endpoint admitted its rate times the time between, less what
        # its bucket lost while full: each pair gives a lower bound, to within one request (counted
        # off). The best bound of all pairs with the latest refusal is the measure.
        measured, between = None, 0
        for earlier_sent, earlier_admitted in empty_at:
            n = admitted - earlier_admitted
            if sent - earlier_sent >= MEASURE_MIN_S and n >= 2:
                bound = (n - 1) / (sent - earlier_sent)
                if measured is None or bound > measured:
                    measured, between = bound, n
        if sent <= self._unheard_before:  # at the old pace, by a sender not yet told of the last change
            if measured is not None:
                self._pace(now, sent, measured, precise=between >= PRECISE_COUNT, blind=False)
            return
        self._pace(now, sent, measured, precise=between >= PRECISE_COUNT)

    def _admitted_before(self, t: float) -> int:
        """Requests sent before `t` and not refused: refusals come back at once, so the ones known now
        are the ones sent before `t`; requests still in flight count as admitted."""
        return self._starts - self._sent_after(t) - self._refused_count

    def _sent_after(self, t: float) -> int:
        n = 0
        for s in reversed(self._sent):
            if s <= t:
                break
            n += 1
        return n

    def _pace(self, now: float, sent: float, measured: float | None, precise: bool, blind: bool = True) -> None:
        """A refusal to a request sent at `sent`: the endpoint's rate lies between what it was measured to
        admit (a lower bound) and the pace that was refused; a refusal soon after the last change says the
        pace is far too high, one after a clean stretch that it is just over. Not `blind`: the measure
        alone (the refused pace is one already cut)."""
        bucket = self.requests
        before = bucket.rate if bucket is not None else self._recent_start_rate(now)
        cut = before * (0.5 if sent - self._last_change < MEASURE_CLEAN_S else 0.9)
        if measured is not None and (measured * _HEADROOM >= cut or not blind):
            rate = measured * _HEADROOM
            self._measured = precise
            reason = f"429 from endpoint: it admitted {measured * 60:.0f} requests/min"
        else:
            rate = max(cut, 1.0 / 60.0)
            self._measured = False
            reason = "429 from endpoint"
        if self.told_rpm:
            rate = min(rate, self.told_rpm / 60.0)
        if bucket is None:
            self.requests = Bucket(rate, pace_capacity(rate), now)
            self.requests.level = 0.0
        else:
            bucket.rate = rate
            bucket.capacity = pace_capacity(rate)
        self.source = "learned"
        self._creep_cap = 2 * rate  # a guess rises to find the rate, not past what was ever refused
        self._lower_concurrency(now, None, reason)

    def _lower_concurrency(self, now: float, factor: float | None, reason: str) -> None:
        """After a rate limit the pace decides, and concurrency need not exceed what the pace keeps busy."""
        if factor is not None:
            self.concurrency = max(1.0, self.concurrency * factor)
        self._last_change = now
        self._record(now, reason)

    def _recent_start_rate(self, now: float) -> float:
        window = 1.0
        recent = sum(1 for s in self._sent if s >= now - window)
        return max(recent / window, 1.0)

    def _learn_from_headers(self, sent: float, now: float, headers: LimitHeaders) -> None:
        """x-ratelimit headers: the limit per minute paces starts; what remains sets the bucket's level."""
        if headers.limit_requests:
            rate = headers.limit_requests / 60.0
            if self.told_rpm:
                rate = min(rate, self.told_rpm / 60.0)
            self.requests = self._from_headers(self.requests, rate, headers.remaining_requests, sent, now, 1.0)
        if headers.limit_tokens:
            rate = headers.limit_tokens / 60.0
            if self.told_tpm:
                rate = min(rate, self.told_tpm / 60.0)
            per_request = self.tokens_per_request or 1.0
            self.tokens = self._from_headers(self.tokens, rate, headers.remaining_tokens, sent, now, per_request)
        if self.source not in ("rpm", "tpm", "headers") and (headers.limit_requests or headers.limit_tokens):
            self.source = "headers"
            self._record(now, "x-ratelimit headers")

    def _from_headers(
        self, bucket: Bucket | None, rate: float, remaining: float | None, sent: float, now: float, per_request: float
    ) -> Bucket:
        if bucket is None:
            bucket = Bucket(rate, 1.0, now)
        bucket.refill(now)
        bucket.rate = rate
        if remaining is not None:
            # What the endpoint had left when it took this request, less what was sent after it, plus
            # what refilled since: the endpoint's bucket as it stands now.
            later = self._sent_after(sent) * per_request
            level = remaining - later + (now - sent) * rate
            bucket.capacity = max(bucket.capacity, remaining, 1.0)
            bucket.level = min(bucket.level, level - per_request)  # one request of margin
        return bucket

    # ---- what a person sees ----------------------------------------------------------------------

    def set_ceiling(self, total: int) -> None:
        """The slider moved: the adaptive value stays under it."""
        if not self.adaptive or self.concurrency > total:
            self.concurrency = float(total)

    def set_budgets(self, rpm: int | None, tpm: int | None) -> None:
        """A person (or the API) says what the endpoint allows: requests and tokens per minute, None
        for no budget. Starts are paced to them from now on; what was learned stays below them."""
        now = self._clock()
        self.told_rpm, self.told_tpm = rpm, tpm
        if rpm:
            rate = rpm / 60.0
            if self.requests is None or self.source in ("rpm", "tpm", None):
                self.requests = Bucket(rate, pace_capacity(rate), now)
            else:
                self.requests.rate = min(self.requests.rate, rate)
            self.source = "rpm" if self.source in ("rpm", "tpm", None) else self.source
        elif self.source == "rpm":
            self.requests, self.source = None, None
        if tpm:
            self.tokens = Bucket(tpm / 60.0, tpm / 60.0, now)
            self.source = self.source or "tpm"
        else:
            self.tokens = None
            if self.source == "tpm":
                self.source = None
        self._record(now, f"budgets set: rpm {rpm or '-'}, tpm {tpm or '-'}")

    def view(self, now: float) -> RateView:
        while self._refusals and self._refusals[0] < now - HISTORY_S:
            self._refusals.popleft()
        return RateView(
            ceiling=self.limit.total,
            concurrency=min(self.limit.total, int(self.concurrency)),
            in_flight=self.limit.in_use,
            paced_rpm=None if self.requests is None else round(self.requests.rate * 60.0, 1),
            tpm=None if self.tokens is None else round(self.tokens.rate * 60.0, 1),
            source=self.source,
            requests_per_s=self._start_counts.total(now, 10.0) / 10.0,
            tokens_per_min=self._token_use.total(now, HISTORY_S),
            rate_limited_last_min=len(self._refusals),
            held_s=max(0.0, self.hold_until - now),
            adaptive=self.adaptive,
        )

    def _record(self, now: float, reason: str) -> None:
        paced = None if self.requests is None else round(self.requests.rate * 60.0, 1)
        change = Change(now, min(self.limit.total, int(self.concurrency)), paced, reason)
        self.changes.append(change)
        self._on_change(change)
