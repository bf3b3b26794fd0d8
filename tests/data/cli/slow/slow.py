import asyncio


async def wait(row):
    await asyncio.sleep(0.05)  # sync-ok: stands in for a slow call
    return row["id"]
