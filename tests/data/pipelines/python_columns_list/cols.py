def f(row):
    return {}
