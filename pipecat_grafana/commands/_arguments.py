"""What the subcommands' arguments share: parsers of numbers that say what is wrong.

Each is an argparse ``type=``: a bad value ends the command with argparse's usage line,
the option's name and a sentence saying what is wrong, not a traceback.
"""

import argparse
import math
from collections.abc import Callable


def positive(what: str = "number") -> Callable[[str], float]:
    """A parser of positive, finite numbers.

    Args:
        what: What the value is, as the error message names it, e.g. ``"number of seconds"``.

    Returns:
        The parser, for ``add_argument(type=...)``.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {what}: {text!r}") from None
        # Not `value <= 0`, so that NaN is refused too.
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive {what}, not {text!r}")
        return value

    return parse


def at_least(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers no smaller than ``minimum``.

    Args:
        minimum: The smallest value accepted.

    Returns:
        The parser, for ``add_argument(type=...)``.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse
