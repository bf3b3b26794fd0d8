import asyncio


async def stuck(row):
    await asyncio.sleep(60)  # sync-ok: a cell that will not finish before the test interrupts it
    return row["id"]
