"""The pipeline file as pydantic models: seed, models, columns and run settings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class ModelConfig(_Strict):
    model: str
    """The model name the endpoint knows."""
    base_url: str | None = None
    """Any OpenAI-compatible endpoint; None means the client's default."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key; keys never live in files."""
    max_parallel: int = Field(default=32, ge=1)
    """Most requests in flight to this model at once."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-request timeout; defaults to the run's timeout_s."""
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """Passed through to the endpoint with every request."""


class _ColumnBase(_Strict):
    name: str
    """The column's name; later columns refer to it in templates and depends_on."""
    depends_on: list[str] = Field(default_factory=list)
    """Columns this one needs besides those its templates mention."""


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


class PythonColumn(_ColumnBase):
    kind: Literal["python"]
    function: str
    """`module:function`, module resolved relative to the pipeline's folder; sync or async."""
    columns: list[str] | None = None
    """Several output columns from one call: the function returns a dict with these keys."""


class TemplateColumn(_ColumnBase):
    kind: Literal["template"]
    template: str
    """Jinja2 template rendered over the row."""


ColumnConfig = Annotated[LLMColumn | PythonColumn | TemplateColumn, Field(discriminator="kind")]


class RunConfig(_Strict):
    name: str | None = None
    """Run name; defaults to the pipeline file's stem."""
    row_group_size: int = Field(default=100, ge=1)
    """Rows per row group: the unit of admission, checkpoint and output file."""
    row_groups_in_flight: int = Field(default=4, ge=1)
    """Row groups admitted at once; bounds memory."""
    max_parallel: int = Field(default=64, ge=1)
    """Execution slots: cells running at once across all columns."""
    python_threads: int | None = Field(default=None, ge=1)
    """Threads for sync python functions; defaults to max_parallel."""
    retries: int = Field(default=3, ge=0)
    """Extra attempts for a cell whose failure is retryable."""
    backoff_s: float = Field(default=1.0, ge=0)
    """First retry delay; doubles each attempt, with jitter."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Per-attempt timeout of one cell."""


class PipelineConfig(_Strict):
    seed: SeedConfig
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    columns: list[ColumnConfig]
    run: RunConfig = Field(default_factory=RunConfig)

    def output_columns(self, column: ColumnConfig) -> list[str]:
        """The columns a column config writes: its `columns` list or its own name."""
        if isinstance(column, PythonColumn) and column.columns:
            return list(column.columns)
        return [column.name]
