def ok(row, ctx=None):
    return 1
