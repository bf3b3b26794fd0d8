SETTINGS = {}
TOKEN = SETTINGS["token"]


def f(row):
    return 1
