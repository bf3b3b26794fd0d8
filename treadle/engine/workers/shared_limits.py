"""The run's limits over the workers of `--workers N`: an endpoint's limit is global, so each worker runs
with a share of every limit (slots, row groups, each model's), of each model's rpm and tpm budgets, and of
its adaptive value and pace (adapted by the parent: shared_rates.py). Shares go out again when a total
changes, a worker dies, when the workers holding row groups change, and (the adaptive ones) four times a
second and as soon as the parent lowers them. The UIs see each limit in use and its peak summed over the workers.

At the run's tail, with no group left to hand out, a worker that has written all its groups idles while
another still runs its own: the slots, model limits and budgets are then split between the workers
holding groups, and an idle one keeps 1 of each (a share is never 0), so the last groups run at the run's
limits rather than at a fraction of them. A retry that gives an idle worker a group again splits them back."""

from __future__ import annotations

from treadle.engine.limits import ROW_GROUPS, Limit
from treadle.engine.rate_limits import ModelRate
from treadle.engine.workers.messages import SetBudgets, SetLimit, shares
from treadle.engine.workers.pool import WorkerHandle
from treadle.engine.workers.shared_rates import SharedRates


class SharedLimits:
    """The parent's side: its limits and rates are the run's; `workers` its list of workers (it grows)."""

    def __init__(
        self, limits: dict[str, Limit], rates: dict[str, ModelRate], shared: SharedRates, workers: list[WorkerHandle]
    ) -> None:
        self._limits = limits
        self._rates = rates
        self._shared = shared
        self._workers = workers
        self._split_between: frozenset[int] | None = None
        """The workers the shares were last split between."""

    def budgets(self, key: str, workers: int) -> list[tuple[int | None, int | None]]:
        """A model's (rpm, tpm) budgets split between `workers` (None: no budget)."""
        rpm, tpm = self._rates[key].told_rpm, self._rates[key].told_tpm
        rpms = [None] * workers if rpm is None else shares(rpm, workers)
        tpms = [None] * workers if tpm is None else shares(tpm, workers)
        return list(zip(rpms, tpms, strict=True))

    def _sharing(self) -> list[WorkerHandle]:
        """The live workers holding row groups, or every live one if none holds any (at the start)."""
        alive = [h for h in self._workers if h.alive]
        return [h for h in alive if h.outstanding] or alive

    def send_limit(self, name: str) -> None:
        """Each live worker's share of the limit `name` (none yet while they start: each starts with its
        share of the totals then). Row groups are split between all of them: they are what is handed out."""
        alive = [h for h in self._workers if h.alive]
        if not alive:
            return
        sharing = alive if name == ROW_GROUPS else self._sharing()
        split = dict(zip((h.index for h in sharing), shares(self._limits[name].total, len(sharing)), strict=True))
        for handle in alive:
            handle.send(SetLimit(name, split.get(handle.index, 1)))

    def send_budgets(self, key: str) -> None:
        """Each live worker's share of a model's budgets (none yet while they start)."""
        sharing, rate = self._sharing(), self._rates[key]
        if not sharing:
            return
        split = dict(zip((h.index for h in sharing), self.budgets(key, len(sharing)), strict=True))
        idle = (None if rate.told_rpm is None else 1, None if rate.told_tpm is None else 1)
        for handle in (h for h in self._workers if h.alive):
            rpm, tpm = split.get(handle.index, idle)
            handle.send(SetBudgets(key.removeprefix("model:"), rpm, tpm))

    def rebalance(self) -> None:
        """The shares split again if the workers holding row groups have changed (the run's tail; a retry
        that gives an idle worker a group); a set message per limit, only then."""
        split_between = frozenset(h.index for h in self._sharing())
        if split_between != self._split_between:
            self._split_between = split_between
            self.send_all()

    def send_all(self) -> None:
        """Every limit and budget split again (a worker died: the others take its share)."""
        for name in self._limits:
            self.send_limit(name)
        for key in self._rates:
            self.send_budgets(key)

    def adapt(self, ended: WorkerHandle | None = None) -> None:
        """What the workers' requests met, replayed into each model's rate as far as all have told; a
        pace or adaptive value that went down goes out at once (the workers send at the old one until then)."""
        if ended is not None:
            self._shared.ended(ended.index)
        for key in self._rates:
            self._limits[key].in_use = self.in_use(key)  # what the UIs see in flight
        self._shared.replay()
        if self._shared.changed():
            self.share_rates()

    def share_rates(self) -> None:
        """Each running worker's share of every model's adaptive value, pace and hold: split between the
        workers holding row groups (one without any gets a share too, for when it is given some)."""
        running = [h for h in self._workers if h.alive and h.finished is None]
        if not running or not self._rates:  # no models (python columns alone): nothing to share
            return
        busy = sum(1 for h in running if h.outstanding)
        for handle, message in zip(running, self._shared.messages(len(running), busy), strict=True):
            handle.send(message)

    def in_use(self, name: str) -> int:
        """How much of a limit the live workers held at their last ticks."""
        return sum(h.tick.in_use.get(name, 0) for h in self._workers if h.alive and h.tick is not None)

    def peaks(self) -> None:
        """Each limit's peak: at least the sum of the peaks the last ticks of the workers holding groups
        told (each since its previous tick). An idle worker's last busy stretch came before the others
        took its share (the run's tail), so it is not added to theirs."""
        holding = [h.tick for h in self._workers if h.tick is not None and h.outstanding]
        for name, limit in self._limits.items():
            limit.peak = max(limit.peak, sum(tick.peaks.get(name, 0) for tick in holding))
