"""No-op columns for bench/scheduler.py and bench/tracing_cost.py: they measure the engine, not the work."""


async def first(row):
    return 1


async def second(row):
    return row["first"] + 1


def pipeline(seed: str, parallel: int, trace: bool) -> dict:
    """The benches' pipeline: 2 dependent no-op columns over the rows of `seed`."""
    return {
        "seed": {"path": seed},
        "columns": [
            {"name": "first", "kind": "python", "function": "noop_cols:first"},
            {"name": "second", "kind": "python", "function": "noop_cols:second", "depends_on": ["first"]},
        ],
        "run": {
            "row_group_size": 1000,
            "row_groups_in_flight": 4,
            "max_parallel": parallel,
            "trace": trace,
        },
    }
