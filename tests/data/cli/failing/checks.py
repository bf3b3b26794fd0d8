def length(row):
    if row["word"].startswith("g"):
        raise ValueError(f"no words starting with g, got {row['word']!r}")
    return len(row["word"])
