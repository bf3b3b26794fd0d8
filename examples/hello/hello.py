"""Python columns of the hello example: one sync function with two outputs, one async function."""

import asyncio


def profile(row):
    """Runs in a worker thread; returns two columns at once."""
    age = row["age"]
    group = "young" if age < 30 else "middle" if age < 60 else "senior"
    return {"initials": "".join(part[0] for part in row["name"].split()), "age_group": group}


async def shout(row):
    """Runs on the engine's loop; the pause stands in for an awaited call to some service."""
    await asyncio.sleep(0.001)
    return row["greeting"].upper()
