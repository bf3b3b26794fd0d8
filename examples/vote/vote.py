"""A python column that asks the model three times and keeps the majority answer.

`ctx.llm_batch` runs the three calls concurrently on the engine's own loop, under the model's
request limit, with the same retries and tracing as an llm column.
"""

from collections import Counter


def majority(row, ctx):
    prompts = [f"{row['question']} (variant {i})" for i in (1, 2, 3)]
    answers = [answer.strip() for answer in ctx.llm_batch(prompts, model="solver")]
    best, votes = Counter(answers).most_common(1)[0]
    return {"answer": best, "answer__votes": votes, "answer__candidates": answers}
