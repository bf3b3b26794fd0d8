"""The python column of bench/memory.py's pipeline: sync, so it runs on the engine's thread pool."""


def initials(row):
    return "".join(part[0] for part in row["name"].split())
