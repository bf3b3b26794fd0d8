"""Python columns that call the pipeline's model through the column context."""

import time


def ask_three(row, ctx):
    answers = ctx.llm_batch([f"{row['q']} #{i}" for i in range(3)])
    return len(answers)


async def ask_async(row, ctx):
    return await ctx.allm(f"async {row['q']}")


def blocking(row):
    time.sleep(0.1)  # sync-ok: a blocking call, the kind of work sync columns do
    return row["id"]


def blocking_short(row):
    time.sleep(0.02)  # sync-ok: a blocking call, the kind of work sync columns do
    return row["id"]
