"""Numbers as the report's tables show them."""

from __future__ import annotations

from collections.abc import Sequence

_SPARKS = "▁▂▃▄▅▆▇█"


def seconds_text(seconds: float | None) -> str:
    """`1,234 s`, `12.34 s`, `12.3 ms`; `-` for none."""
    if seconds is None:
        return "-"
    if seconds >= 100:
        return f"{seconds:,.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


def share_text(share: float | None) -> str:
    return "-" if share is None else f"{share:.1%}"


def number_text(value: float | int | None) -> str:
    """Ints as `1,234`, floats as `1,234.57`; `-` for none."""
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def cost_text(value: float | None) -> str:
    return "-" if value is None else f"{value:,.4f}"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """A one-line chart of `values` (re-bucketed to at most `width` characters)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [max(values[int(i * step) : max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)]
    top = max(values) or 1
    return "".join(_SPARKS[min(int(v / top * (len(_SPARKS) - 1) + 0.5), len(_SPARKS) - 1)] for v in values)
