"""What the parent and its worker processes tell each other (pickled over a multiprocessing pipe),
and how a run's limits are shared out between the workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from treadle.engine.events import EventPayload
from treadle.engine.policy import CellFailure
from treadle.engine.rate_headers import LimitHeaders
from treadle.engine.tracing import Batch

if TYPE_CHECKING:
    from treadle.engine.snapshots import CellReading

# ---- the shared adaptive limit (shared_rates.py) ---------------------------------------------------

Answer = tuple[float, int, float | None, LimitHeaders | None, float | None]
"""What `ModelRate.answered` is told: sent, status, retry_after, headers, tokens_used."""


@dataclass(frozen=True)
class RateSignals:
    """What a worker's requests to one model met since its last tick (times on its own clock)."""

    starts: bytes
    """Send times, array('d') bytes."""
    answers: list[tuple[float, int, Answer]]
    """(when it came, the worker's requests to the model in flight then, the answer)."""
    paced: bool
    """A start waited for the pace (a learned pace creeps up while it holds starts back)."""


@dataclass(frozen=True)
class RateShare:
    """A worker's share of one model's adaptive value, pace and hold, from the parent."""

    concurrency: float
    requests: tuple[float, float] | None
    """(rate per second, capacity) of its pace's bucket; None: not paced by requests."""
    tokens: tuple[float, float] | None
    held_s: float
    """Starts wait this much longer (a Retry-After another worker was told)."""
    source: str | None
    doubles_in: float | None = None
    """The pace is the slow start's: it doubles in this many seconds and every PROBE_STEP_S after, until the
    next share (math.inf: from the worker's first start on); None: it stays."""


@dataclass(frozen=True)
class ShareRates:
    """Parent -> worker: its share of each model's adaptive value, pace and hold."""

    shares: dict[str, RateShare]


# ---- parent -> worker ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    """Row groups for the worker to run, with the cells another worker already finished in them (it
    died: its journal said so)."""

    groups: list[int]
    done: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """row -> column -> that column's values, as `Recovery.done`."""
    dropped: dict[int, str | None] = field(default_factory=dict)
    """Rows of them dropped already -> the filter column that took it (None: a person dropped it)."""


@dataclass(frozen=True)
class SetLimit:
    name: str
    total: int


@dataclass(frozen=True)
class SetBudgets:
    model: str
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True)
class Command:
    """pause, resume, stop (start nothing new; end when the running cells have), abort (cancel them
    now), or close (every group given is done: end)."""

    name: str
    reason: str = "interrupted"


@dataclass(frozen=True)
class Retry:
    """Failed cells (and their dependents) of groups the worker holds or wrote, back into work; it
    answers with `Retried` under the same `request`."""

    request: int
    cells: list[int]
    held_failed: bool = False
    """Every failed cell of the groups it holds too (the parent does not know them yet)."""
    nodes: tuple[int, ...] = ()
    """With `held_failed`: only the failed cells of these columns (none given: of every column)."""


@dataclass(frozen=True)
class ReadCell:
    """A cell as the worker holds it, for the cell detail: it answers with `CellRead` under `request`."""

    request: int
    row: int
    node: int


@dataclass(frozen=True)
class Drop:
    """Rows of groups the worker holds or wrote: no more work, left out of the output."""

    rows: list[int]


@dataclass(frozen=True)
class EditColumn:
    """A change to a column the parent checked and recorded as `version`: the column's next cells use it."""

    column: str
    changes: dict[str, Any]
    """Field -> new value."""
    version: int


@dataclass(frozen=True)
class ReloadFunction:
    """A python column's or filter's function, loaded again from its module's text as the parent read and
    checked it (a worker's disk may be another machine's): its next cells use it, stamped `version`."""

    column: str
    version: int
    source: bytes


@dataclass(frozen=True)
class Recompute:
    """Run `column` again (with its dependents): in the groups it holds (`held`), for the rows of `rows`
    (None: every row) that finished it, as one process would; and the `cells` named, of groups it wrote
    or adopted. Answered with `Retried` under `request`: the cells turned back into work, or with
    `dry_run` how many of the held groups' cells would be (nothing run)."""

    request: int
    column: str
    held: list[int]
    rows: list[int] | None
    cells: list[int]
    dry_run: bool = False


@dataclass(frozen=True)
class Adopt:
    """A written group whose writer has ended (or that was written before this run), given to this worker
    to run cells of it again: its cell states, filtered rows and failures, as the parent holds them."""

    group: int
    states: bytes
    filtered: list[tuple[int, int]]
    failures: list[tuple[int, CellFailure]]
    table: bytes | None = None
    """The group's file, for a worker whose disk is not the run directory's (a Ray actor)."""


EditMessage = EditColumn | ReloadFunction | Recompute | Adopt
ParentMessage = Assign | SetLimit | SetBudgets | Command | Retry | Drop | ReadCell | ShareRates | EditMessage

# ---- worker -> parent ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupWritten:
    """A row group's file is in the run directory (or in `table`); `partial` when a stop cut the group short."""

    group: int
    states: bytes
    """The cell states of the group's rows (dropped ones too), row after row, as the tracker holds them."""
    filtered: list[tuple[int, int]]
    """Rows of the group a filter column turned away, each with the filter's node."""
    failures: list[tuple[int, CellFailure]]
    """The group's failed cells: (cell, failure)."""
    partial: bool = False
    table: bytes | None = None
    """The group's file itself (Parquet bytes) when the worker's disk is not the run directory's (Ray
    actors): the parent writes it there."""


@dataclass(frozen=True)
class Tick:
    """What a worker did since its last tick (four times a second)."""

    traces: Batch | None
    """Its attempts since the last tick (None with tracing off)."""
    latencies: list[bytes] | None
    """With tracing off: each node's run times of cells done since the last tick (array('d') bytes)."""
    groups: list[int]
    """The row groups it holds (in flight or waiting for their file)."""
    counts: list[int]
    """Cell counts of those groups by node and state (`CellTracker.counts` layout)."""
    in_use: dict[str, int]
    peaks: dict[str, int]
    """The most of each limit in use at once since the last tick."""
    events: list[EventPayload]
    """Events the parent passes on (failed, retried, adapted cells); the rest it makes itself."""
    first_row_done_at: float | None
    cache: tuple[int, int, int]
    """The response cache's hits, misses, answers stored so far."""
    calls: int = 0
    """Model requests started so far (the parent's workers panel shows calls/s)."""
    states: bytes = b""
    """The cell states of `groups`, group after group, row after row (the grid's rows in view)."""
    failures: list[tuple[int, CellFailure]] = field(default_factory=list)
    """The failed cells of `groups` (a written group's come with `GroupWritten`)."""
    clock: float = 0.0
    """When it was sent, on the worker's clock (the times of `signals` are on it)."""
    signals: dict[str, RateSignals] = field(default_factory=dict)
    """What each model limit's requests met since the last tick (the parent adapts the limits)."""
    requests: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Per model limit: requests started, answers that asked to wait (429), so far."""
    attempts: tuple[int, list[int]] = (0, [])
    """Attempts at cells since the last tick, and which of them failed (1 for the first): the parent's
    early stop counts every worker's."""


@dataclass(frozen=True)
class Finished:
    """The worker's run has ended (all its groups written, or stopped)."""

    engine_cpu_s: float
    fatal: str | None
    requests: dict[str, tuple[int, int]]
    """Per model limit: requests started, answers that asked to wait (429)."""


@dataclass(frozen=True)
class Retried:
    """How many cells a `Retry` turned back into work."""

    request: int
    count: int


@dataclass(frozen=True)
class CellRead:
    """The answer to `ReadCell`, read as one process reads its own cells (the attempts left out: the
    parent has them merged); its values None once the worker no longer holds the row."""

    request: int
    reading: CellReading


WorkerMessage = GroupWritten | Tick | Finished | Retried | CellRead


def shares(total: int, workers: int) -> list[int]:
    """`total` split between `workers` as evenly as whole numbers allow, the larger shares first; at
    least 1 each (a limit below the number of workers is exceeded rather than left with an idle worker)."""
    base, extra = divmod(total, workers)
    return [max(1, base + (1 if i < extra else 0)) for i in range(workers)]
