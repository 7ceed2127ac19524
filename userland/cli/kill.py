"""`llmos kill PID`: end a process as the kernel's owner."""

import argparse
import signal

from ..errors import LlmosError
from .common import add_kernel_option, connect


def add_parser(sub) -> None:
    """Add `llmos kill`."""
    p = sub.add_parser(
        "kill",
        help="end a process; everything it holds is reclaimed",
        description="End a process of the kernel (by llmos pid, as `llmos ps` shows). You prove you own the "
        "kernel with its admin key, which only its owner can read.",
    )
    add_kernel_option(p)
    p.add_argument("pid", type=int)
    p.add_argument("-s", "--signal", default="TERM", help="signal name or number for a spawned program (default TERM)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Kill one process."""
    sig = int(args.signal) if args.signal.isdigit() else int(signal.Signals["SIG" + args.signal.upper().removeprefix("SIG")])
    with connect(args, "llmos-kill", admin=True) as c:
        try:
            c.kill(args.pid, sig)
        except LlmosError as exc:
            print(f"llmos kill: {exc.message}")
            return 1
    return 0
