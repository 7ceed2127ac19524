"""The one-line progress display the long benchmarks print on stderr while they run."""

import sys
from collections.abc import Callable


def status_line(bench: str) -> Callable[[str], None]:
    """A function that prints its text over the previous status line of `llmos bench BENCH`, on stderr."""

    def say(text: str) -> None:
        print(f"\r[bench {bench}] {text:<60}", end="", file=sys.stderr, flush=True)

    return say
