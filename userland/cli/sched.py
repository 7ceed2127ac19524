"""`llmos sched`: see or switch the scheduling policy of a running kernel's devices."""

import argparse

from ..errors import LlmosError
from .common import add_kernel_option, connect, table


def add_parser(sub) -> None:
    """Add `llmos sched`."""
    p = sub.add_parser(
        "sched",
        help="show or switch the scheduling policy of each device",
        description="Show which scheduling policy orders each device's work queue, or switch one at run time "
        "(queued work is kept). Policies: fcfs, rr, priority, mlfq, vtc, and any a plugin adds.",
    )
    add_kernel_option(p)
    p.add_argument("device", nargs="?", help="device name or kind (default: every device)")
    p.add_argument("--set", metavar="POLICY", help="switch the device to this policy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print (or switch and print) the policies."""
    with connect(args, "llmos-sched") as c:
        try:
            if args.set:
                infos = [c.sched_set(args.device or "cpu", args.set)]
            else:
                names = [args.device] if args.device else [d.name for d in c.devices() if d.state == "online"]
                infos = [c.sched(name) for name in names]
        except LlmosError as exc:
            print(f"llmos sched: {exc.message}")
            return 1
    print(table([[i.device, i.policy, i.queued, ", ".join(i.policies)] for i in infos], ["DEVICE", "POLICY", "QUEUED", "AVAILABLE"]))
    return 0
