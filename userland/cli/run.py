"""`llmos run NAME [ARGS...]`: run a registered program under the kernel and show its output."""

import argparse
import sys

from ..errors import LlmosError
from .common import add_kernel_option, connect


def add_parser(sub) -> None:
    """Add `llmos run`."""
    p = sub.add_parser(
        "run",
        help="run a registered program under the kernel",
        description="Ask the kernel to spawn a registered program as a child process, print its output as it "
        "comes, and exit with its status. `llmos run --list` lists the programs.",
    )
    add_kernel_option(p)
    p.add_argument("program", nargs="?", help="program name (see --list)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    p.add_argument("--list", action="store_true", help="list the registered programs")
    p.add_argument("--detach", action="store_true", help="print the pid and leave the program running")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Spawn, follow, and return the child's status."""
    if args.list or not args.program:
        from llmos.kernel import plugins

        for entry in sorted(plugins.programs(plugins.plugin_manager()).values()):
            print(f"{entry.name:12} {entry.help}")
        return 0
    with connect(args, "llmos-run") as c:
        try:
            child = c.spawn(args.program, args.args)
        except LlmosError as exc:
            print(f"llmos run: {exc.message}", file=sys.stderr)
            return 2
        if args.detach:
            print(child.pid)
            return 0
        try:
            exited = c.wait(child.pid, on_output=lambda text: print(text, end="", flush=True))
        except KeyboardInterrupt:
            c.kill(child.pid)
            return 130
    if exited.status != 0:
        print(f"llmos run: {args.program} (pid {exited.pid}) {exited.reason}", file=sys.stderr)
    return exited.status if 0 <= exited.status < 256 else 128 + min(-exited.status, 127)
