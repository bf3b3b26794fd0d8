"""Python columns for the good pipeline."""


def describe(row):
    return f"table {row['table']}"


async def stats(row, ctx):
    words = row["question"].split()
    return {"n_words": len(words), "n_chars": len(row["question"]), "n_words__debug": words}
