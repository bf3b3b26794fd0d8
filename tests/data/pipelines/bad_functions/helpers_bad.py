CONSTANT = 3


def describe(row):
    return 1


def no_args():
    return 1
