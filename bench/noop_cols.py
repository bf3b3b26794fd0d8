"""No-op columns for bench/scheduler.py: they measure the engine, not the work."""


async def first(row):
    return 1


async def second(row):
    return row["first"] + 1
