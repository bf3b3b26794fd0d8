"""Python columns that fail in chosen ways, for the failure-policy tests."""

from treadle.engine.errors import RetryableCellError

_seen: dict[int, int] = {}


def fails_on_odd_rows(row):
    if row["id"] % 2:
        raise ValueError(f"row {row['id']} is odd")
    return row["id"] * 10


def flaky_twice(row):
    """A retryable error on the first two attempts of rows divisible by 5, then success."""
    seen = _seen.get(row["id"], 0)
    _seen[row["id"]] = seen + 1
    if row["id"] % 5 == 0 and seen < 2:
        raise RetryableCellError("busy")
    return row["id"]
