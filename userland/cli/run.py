"""`llmos run NAME [ARGS...]`: run a registered program under the kernel and show its output."""

import argparse
import os
import sys

from llmos.syscalls.plugin import ProgramEntry

from ..errors import LlmosError
from .common import add_kernel_option, connect


def add_parser(sub) -> None:
    """Add `llmos run`."""
    p = sub.add_parser(
        "run",
        help="run a registered program under the kernel",
        description="Ask the kernel to spawn a registered program as a child process, print its output as it "
        "comes, and exit with its status. The kernel gives its children no input (stdin is /dev/null), so an "
        "interactive program (such as chat; `llmos run --list` marks them) runs in this command's own process "
        "instead, reading this terminal and attached to the same kernel (--kernel, else $LLMOS_KERNEL or the "
        "local default). `llmos run --list` asks the kernel which programs it can run.",
    )
    add_kernel_option(p)
    p.add_argument("program", nargs="?", help="program name (see --list)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    p.add_argument("--list", action="store_true", help="list the programs the kernel can run")
    p.add_argument("--detach", action="store_true", help="print the pid and leave the program running")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Spawn, follow, and return the child's status (or run an interactive program here)."""
    from llmos.kernel import plugins

    if args.list or not args.program:
        with connect(args, "llmos-run") as c:
            for info in c.programs():
                print(f"{info.name:12} {info.help}{' (interactive)' if info.interactive else ''}")
        return 0
    entry = plugins.programs(plugins.plugin_manager()).get(args.program)
    if entry is not None and entry.interactive:
        return run_here(args, entry)
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


def run_here(args: argparse.Namespace, entry: ProgramEntry) -> int:
    """Run an interactive program in this process; its `Client()` attaches to the kernel this command names."""
    from .. import launch
    from ..wire import kernel_address

    if args.detach:
        print(f"llmos run: {entry.name} is interactive: it runs in this terminal, it cannot detach", file=sys.stderr)
        return 2
    try:
        os.environ["LLMOS_KERNEL"] = kernel_address(args.kernel)
    except LlmosError as exc:
        print(f"llmos run: {exc.message}", file=sys.stderr)
        return 1
    os.environ["LLMOS_PROGRAM"] = entry.name
    os.environ.pop("LLMOS_CLAIM", None)  # attach as a new process, not as the one that may have run this command
    return launch.main([entry.target, *args.args])
