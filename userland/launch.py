"""`python -m llmos.userland.launch module:function ARGS...`: how the kernel starts a program.

The spawned process finds the kernel and its claim token in LLMOS_KERNEL and
LLMOS_CLAIM, which `Client()` reads. The function gets the argument list and
its return value is the exit status.
"""

import importlib
import sys

from llmos.kernel.priority import restore_user_priority


def main(argv: list[str]) -> int:
    """Import the program's function and run it with the remaining arguments."""
    restore_user_priority()  # the kernel runs above its programs; this one is a program
    module, _, func = argv[0].partition(":")
    status = getattr(importlib.import_module(module), func)(argv[1:])
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
