"""`python -m treadle.sim [flags]`: the simulator as a standalone server."""

import argparse
import sys
from typing import NoReturn

from .cli import add_arguments, main_from_args


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block: the message is what needs reading.
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def main() -> int:
    parser = _Parser(prog="python -m treadle.sim", description="OpenAI-compatible simulator")
    add_arguments(parser)
    return main_from_args(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
