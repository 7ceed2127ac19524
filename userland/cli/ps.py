"""`llmos ps`: the kernel's process table."""

import argparse
import time

from llmos.syscalls import rights

from .common import add_kernel_option, connect, size, table


def add_parser(sub) -> None:
    """Add `llmos ps`."""
    p = sub.add_parser("ps", help="list the kernel's processes", description="List the kernel's process table.")
    add_kernel_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one row per process (this command's own process included), with its rights in short
    (`rights.summary`: `default`, `all`, or one of them with what is missing or extra)."""
    with connect(args, "llmos-ps") as c:
        procs = c.ps()
    rows = [
        [p.pid, p.ppid, p.name, p.state, p.os_pid or "-", p.handles, size(p.mem_bytes), p.syscalls,
         f"{time.time() - p.started:.0f}s", rights.summary(p.rights)]
        for p in procs
    ]  # fmt: skip
    print(table(rows, ["PID", "PPID", "NAME", "STATE", "OS PID", "HANDLES", "MEMORY", "CALLS", "AGE", "RIGHTS"]))
    return 0
