import treadle_no_such_dependency  # noqa: F401


def f(row):
    return 1
