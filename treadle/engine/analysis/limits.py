"""The limits of a run over time: each limit's totals from summary.json's `limit_history` or the run's
`--events` file, as step series to the wall time, and the slot-seconds a limit offered."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from treadle.engine.analysis.records import LimitTotals, Point
from treadle.engine.summary_record import RunSummary

SLOTS_LIMIT = "slots"

LimitHistory = dict[str, list[Point]]
"""limit name -> [(t, total), ...] from t = 0: each total holds until the next."""


def read_limit_history(events: Path | None) -> LimitHistory:
    """`limit_changed` events of an `--events` file: limit -> [(t, total), ...] from t=0.

    The first change gives the value before it (its `old`); exact for a run without resumes.
    """
    history: LimitHistory = {}
    if events is None:
        return history
    with open(events, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("type") != "limit_changed":
                continue
            name = event.get("limit")
            try:
                t, old, new = float(event["t"]), int(event["old"]), int(event["new"])
            except (KeyError, TypeError, ValueError):
                continue
            points = history.setdefault(str(name), [(0.0, old)])
            points.append((t, new))
    return history


def limit_history(summary: RunSummary | None, events: Path | None = None, session_start: float = 0.0) -> LimitHistory:
    """Each limit's totals over the run: from the `--events` file if given, else summary.json's
    `limit_history` (the run records every change). That history covers the last session of a resumed
    run: it is laid from `session_start` on, its first totals held from 0."""
    if events is not None:
        return read_limit_history(events)
    history: LimitHistory = {}
    for name, points in ({} if summary is None else summary.limit_history).items():
        try:
            parsed = [(float(t), int(total)) for t, total in points]
        except (TypeError, ValueError):
            continue
        if parsed:
            history[str(name)] = [(0.0, parsed[0][1])] + [(session_start + t, v) for t, v in parsed[1:]]
    return history


def history_from(points: list[Point], start: float) -> list[Point]:
    """A limit's history seen from `start`: the total then in force at 0, later changes shifted."""
    before = [v for t, v in points if t <= start]
    return [(0.0, before[-1] if before else points[0][1])] + [(t - start, v) for t, v in points if t > start]


def limit_info(summary: RunSummary | None, name: str) -> LimitTotals | None:
    """A limit's final total and peak, as summary.json's `limits` has them; None if it has not."""
    info = None if summary is None else summary.limits.get(name)
    if info is None:
        return None
    return LimitTotals(total=int(info.total), peak=int(info.peak))


def limit_series(name: str, summary: RunSummary | None, history: LimitHistory, wall: float) -> list[Point] | None:
    """[(t, total), ...] over the run to `wall`: from the recorded changes if known, else constant."""
    if name in history:
        points = [(round(t, 6), v) for t, v in history[name]]
    else:
        info = limit_info(summary, name)
        if info is None:
            return None
        points = [(0.0, info.total)]
    points.append((round(max(wall, points[-1][0]), 6), points[-1][1]))
    return points


def capacity_s(points: list[Point], wall: float) -> float:
    """Slot-seconds a step series of a limit offered over [0, wall]."""
    offered = 0.0
    for (t, value), (t_next, _) in itertools.pairwise(points):
        offered += value * max(0.0, min(t_next, wall) - t)
    return offered
