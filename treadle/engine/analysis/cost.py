"""What a run's tokens cost: per-model prices (the pipeline's, or given), checked, and applied."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from treadle.engine.analysis.records import SummaryMetrics
from treadle.engine.summary_record import RunSummary

PRICE_KEYS = ("input_per_1m", "output_per_1m")

Prices = Mapping[str, Mapping[str, float]]
"""model name (as in the pipeline's `models:` and the trace's `model`) -> input_per_1m, output_per_1m."""
Price = tuple[float, float]
"""A checked price: per million input tokens, per million output tokens."""


def check_prices(prices: Prices | None) -> dict[str, Price]:
    """Each model's price, checked: both keys, finite numbers >= 0 (else ValueError naming the model)."""
    checked: dict[str, Price] = {}
    for model, price in (prices or {}).items():
        if not isinstance(price, Mapping) or any(k not in price for k in PRICE_KEYS):
            raise ValueError(f"price of model {model!r} needs {' and '.join(PRICE_KEYS)} (per 1M tokens)")
        try:
            values = tuple(float(price[k]) for k in PRICE_KEYS)
        except (TypeError, ValueError):
            raise ValueError(f"price of model {model!r}: {dict(price)!r} is not a number per 1M tokens") from None
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"price of model {model!r} must be finite and >= 0, got {dict(price)!r}")
        checked[str(model)] = (values[0], values[1])
    return checked


def prices_of(models: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The prices a pipeline's `models:` give (ModelConfig.prices), by model name."""
    return {name: model.prices.model_dump() for name, model in models.items() if model.prices is not None}


def pipeline_prices(summary: RunSummary | None) -> dict[str, dict[str, float]]:
    """The per-model prices the run's pipeline gave (summary.json's `metrics.cost.prices`), or {}."""
    metrics = None if summary is None else summary.metrics
    if not isinstance(metrics, SummaryMetrics) or metrics.cost is None:
        return {}
    return dict(metrics.cost.prices)


def cost_of(tokens_in: int, tokens_out: int, price: Price) -> float:
    return tokens_in / 1e6 * price[0] + tokens_out / 1e6 * price[1]
