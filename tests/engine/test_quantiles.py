"""stats.Quantiles: summary.json's latency percentiles in bounded memory. Exact (np.percentile's) up
to EXACT_VALUES values, then from log-sized buckets within BUCKET_RATIO of the exact value."""

from __future__ import annotations

import numpy as np
import pytest

from treadle.engine import stats
from treadle.engine.stats import BUCKET_RATIO, Quantiles


def exact(values: np.ndarray, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    return {f"p{q:g}": round(float(v), 6) for q, v in zip(qs, np.percentile(values, qs), strict=True)}


def test_up_to_the_exact_limit_it_is_numpys_percentile_sum_mean_and_max():
    values = np.random.default_rng(1).lognormal(-4, 1.5, 1_000)
    quantiles = Quantiles()
    quantiles.add(values[:600])
    for value in values[600:]:
        quantiles.append(float(value))
    assert quantiles.percentiles() == exact(values) and quantiles.percentiles((50, 95)) == exact(values, (50, 95))
    assert len(quantiles) == 1_000 and quantiles.total() == float(values.sum())
    assert quantiles.mean() == round(float(values.mean()), 6) and quantiles.maximum() == round(float(values.max()), 6)
    empty = Quantiles()
    assert empty.percentiles() == {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    assert (len(empty), empty.total(), empty.mean(), empty.maximum()) == (0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(2).lognormal(-4, 1.5, 50_000),  # run times of cheap and slow cells
        np.random.default_rng(3).exponential(0.2, 50_000),
        np.concatenate([np.zeros(30_000), np.random.default_rng(4).uniform(0, 2, 20_000)]),  # no queue wait
    ],
)
def test_past_the_limit_percentiles_are_within_the_bucket_ratio(monkeypatch, values):
    monkeypatch.setattr(stats, "EXACT_VALUES", 1_000)
    quantiles = Quantiles()
    for part in np.array_split(values, 7):
        quantiles.add(part)
    for value in values[:5]:  # appended values wait for a fold (any read folds them)
        quantiles.append(float(value))
    values = np.concatenate([values, values[:5]])
    got, want = quantiles.percentiles(), exact(values)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=BUCKET_RATIO - 1, abs=1e-6), name
    assert len(quantiles) == len(values) and quantiles.total() == pytest.approx(float(values.sum()))
    assert quantiles.maximum() == round(float(values.max()), 6)


def test_appended_values_past_the_limit_are_folded_into_buckets(monkeypatch):
    """The hot path's `append` fills a buffer; `fold` (the run calls it with each trace flush) empties it."""
    monkeypatch.setattr(stats, "EXACT_VALUES", 100)
    quantiles = Quantiles()
    append = quantiles.append
    for i in range(1, 1_001):
        append(i / 1_000)
        if i % 50 == 0:
            quantiles.fold()
    assert len(quantiles._buffer) == 0 and len(quantiles) == 1_000
    assert quantiles.percentiles((50,))["p50"] == pytest.approx(0.5005, rel=BUCKET_RATIO - 1)
