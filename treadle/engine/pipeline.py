"""The pipeline file as pydantic models: seed, models, columns and run settings.

Plain data with field-level checks only. Reading a file (`pipeline_loading`) and the checks that need
the seed, the column graph or the python functions (`pipeline_validation`) build on these models; this
module imports neither the graph nor the seed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from treadle.engine.errors import describe_value
from treadle.engine.limits import LIMIT_MAX, PYTHON_THREADS_MAX, WORKERS_MAX


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read `true` as 1
        raise ValueError(f"should be a whole number (got {describe_value(value)})")
    return value


LimitValue = Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=LIMIT_MAX)]
"""A concurrency or size limit: a whole number from 1 to LIMIT_MAX."""


def check_base_url(url: str) -> str | None:
    """Why `url` cannot be an endpoint's base URL (None when it can): it must be http(s) with a host.
    A `${VAR}` left in it is reported as unset where it is expanded."""
    if "${" in url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, got {url!r}"
    if not parts.hostname:
        return f"must name a host, got {url!r}"
    return None


class JoinConfig(_Strict):
    path: str
    """Second table (csv, jsonl or parquet), relative to the pipeline file."""
    on: str
    """Key present in both tables; an inner join, unmatched rows are reported."""


class SeedConfig(_Strict):
    path: str
    """Seed table (csv, jsonl or parquet), relative to the pipeline file."""
    join: JoinConfig | None = None
    """Optional inner join with a second table on a key."""


class ModelPrices(_Strict):
    """What a model's tokens cost, per million, in any currency (the same for every model of a run)."""

    input_per_1m: float = Field(ge=0, allow_inf_nan=False)
    """Per million prompt tokens."""
    output_per_1m: float = Field(ge=0, allow_inf_nan=False)
    """Per million completion tokens."""


class ModelConfig(_Strict):
    model: str
    """The model name the endpoint knows."""
    base_url: str | None = None
    """Any OpenAI-compatible endpoint; None means the client's default."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; keys never live in files."""
    max_parallel: LimitValue = 32
    """Most requests in flight to this model at once: a ceiling the adaptive limit stays under."""
    rpm: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=LIMIT_MAX)] | None = None
    """Requests per minute the endpoint allows this key, if known: starts are paced to it."""
    tpm: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=LIMIT_MAX)] | None = None
    """Tokens (prompt + completion) per minute the endpoint allows, if known: starts are paced to it."""
    adaptive: bool = True
    """Find the endpoint's sustainable rate from its answers (429/503, Retry-After, x-ratelimit headers)
    and stay under it; false sends at the ceiling and budgets only."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-request timeout; defaults to the run's timeout_s."""
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the endpoint with every request."""
    retries: int | None = Field(default=None, ge=0)
    """Extra attempts for a retryable failure of this model's cells; defaults to the run's retries."""
    prices: ModelPrices | None = None
    """Optional: gives the cost of the run's tokens in summary.json and `treadle report`."""
    cache: bool = True
    """Reuse this model's answers across runs (the response cache); false asks the endpoint every time."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and (reason := check_base_url(url)):
            raise ValueError(reason)
        return url


class DefaultOnFailure(_Strict):
    default: Any
    """The value a failed cell takes (marked degraded); its dependents run on it."""


OnFailure = Literal["fail", "skip_row"] | DefaultOnFailure


class _ColumnBase(_Strict):
    name: str
    """The column's name; later columns refer to it in templates and depends_on."""
    depends_on: list[str] = Field(default_factory=list)
    """Columns this one needs besides those its templates mention."""
    retries: int | None = Field(default=None, ge=0)
    """Extra attempts for a retryable failure; defaults to the model's, then the run's."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-attempt timeout; defaults to the model's, then the run's."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Time a cell may take over all its attempts and waits; defaults to the run's cell_deadline_s."""
    on_failure: OnFailure = "fail"
    """When the cell fails for good: `fail` (dependents are blocked), `skip_row` (the row is left out of
    the output, the reason recorded) or `{default: VALUE}` (the cell takes VALUE, marked degraded)."""


class LLMColumn(_ColumnBase):
    kind: Literal["llm"]
    model: str
    """A key of the pipeline's models."""
    prompt: str
    """Jinja2 template of the user message."""
    system: str | None = None
    """Jinja2 template of the system message."""
    output_schema: dict[str, Any] | None = None
    """JSON schema; when set the output is JSON validated against it."""
    cache: bool | None = None
    """Reuse answers across runs (the response cache); defaults to the model's `cache`."""
    temperature: float | None = None
    """This column's sampling temperature; defaults to its model's."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Most tokens of this column's answers; defaults to its model's."""


class PythonColumn(_ColumnBase):
    kind: Literal["python"]
    function: str
    """`module:function`, module resolved relative to the pipeline's folder; sync or async."""
    columns: list[str] | None = None
    """Several output columns from one call: the function returns a dict with these keys."""
    batch: bool = False
    """Call the function once per row group with a pandas DataFrame of its ready rows (seed fields and
    the columns it depends on); it returns one value per row (a Series or list; with `columns`, a
    DataFrame or dict of lists)."""
    batch_size: LimitValue | None = None
    """With `batch`: most rows per call (a row group is split); defaults to the whole row group."""


class TemplateColumn(_ColumnBase):
    kind: Literal["template"]
    template: str
    """Jinja2 template rendered over the row."""


class FilterColumn(_ColumnBase):
    """Keeps the rows for which its test is true; the others are dropped ("filtered by <name>") and the
    columns after it in the file do not run for them. It writes no column."""

    kind: Literal["filter"]
    function: str | None = None
    """`module:function` returning a bool per row (with `batch`, a boolean Series per row group)."""
    expression: str | None = None
    """A Jinja2 expression over the row, such as `{{ score >= 4 }}`."""
    batch: bool = False
    """With `function`: call it once per row group with a DataFrame, as a batch python column."""
    batch_size: LimitValue | None = None
    """With `batch`: most rows per call; defaults to the whole row group."""

    def expression_body(self) -> str | None:
        """The expression without its `{{ }}` (which may be left out in the file)."""
        if self.expression is None:
            return None
        body = self.expression.strip()
        if body.startswith("{{") and body.endswith("}}"):
            body = body[2:-2]
        return body.strip()


ColumnConfig = Annotated[LLMColumn | PythonColumn | TemplateColumn | FilterColumn, Field(discriminator="kind")]


class EarlyStopConfig(_Strict):
    window: int = Field(default=50, ge=1)
    """How many of the most recent attempts are looked at."""
    error_rate: float = Field(default=0.8, gt=0, le=1)
    """The share of failed attempts in the window that pauses the run (rate limits do not count)."""


class RunConfig(_Strict):
    name: str | None = None
    """Run name; defaults to the pipeline file's stem."""
    row_group_size: LimitValue = 100
    """Rows per row group: the unit of admission, checkpoint and output file."""
    row_groups_in_flight: LimitValue = 4
    """Row groups admitted at once; bounds memory."""
    max_parallel: LimitValue = 64
    """Execution slots: cells running at once across all columns."""
    workers: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=WORKERS_MAX)] = 1
    """Engine processes on this machine, each running whole row groups; the run's limits (max_parallel,
    row groups in flight, each model's max_parallel, rpm and tpm) are shared out between them."""
    executor: Literal["local", "ray"] = "local"
    """Where the workers run: `local`, processes on this machine; `ray`, Ray actors (`pip install
    'treadle[ray]'`) on a local Ray or the cluster at `ray_address`, the run directory on this machine."""
    ray_address: str | None = None
    """The Ray cluster to run on (as `ray.init(address=...)` takes it); none: a local Ray."""
    python_threads: Annotated[int, BeforeValidator(_not_a_boolean), Field(ge=1, le=PYTHON_THREADS_MAX)] | None = None
    """Threads for sync python functions; defaults to max_parallel, at most 1024."""
    retries: int = Field(default=3, ge=0)
    """Extra attempts for a cell whose failure is retryable."""
    backoff_s: float = Field(default=1.0, ge=0)
    """First retry delay; doubles each attempt, with jitter."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Per-attempt timeout of one cell."""
    cell_deadline_s: float | None = Field(default=None, gt=0)
    """Time a cell may take over all its attempts and backoff waits (none by default)."""
    trace: bool = True
    """Record a TaskTrace per attempt (ring buffer for the UI, trace.parquet in the run directory)."""
    salvage_rounds: int = Field(default=1, ge=0)
    """Extra rounds, at the end of the run, for cells that spent their attempts on retryable errors."""
    early_stop: EarlyStopConfig | None = Field(default_factory=lambda: EarlyStopConfig())
    """Pause the run when most recent attempts fail (endpoint down, key revoked); null turns it off."""
    cache: str | None = None
    """The response cache's file, relative to the pipeline file; default
    `$XDG_CACHE_HOME/treadle/responses.sqlite` (or `~/.cache/treadle/`)."""
    cache_max_mb: float = Field(default=2048, gt=0)
    """The response cache's size cap: past it the least recently used answers are evicted."""


class PipelineConfig(_Strict):
    seed: SeedConfig
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    columns: list[ColumnConfig]
    run: RunConfig = Field(default_factory=RunConfig)


def output_columns(column: ColumnConfig) -> list[str]:
    """The columns a column config writes: its `columns` list or its own name."""
    if isinstance(column, PythonColumn) and column.columns:
        return list(column.columns)
    if isinstance(column, FilterColumn):
        return []
    return [column.name]
