"""`llmos devices`: the kernel's devices."""

import argparse

from .common import add_kernel_option, connect, size, table


def add_parser(sub) -> None:
    """Add `llmos devices`."""
    p = sub.add_parser("devices", help="list the kernel's devices", description="List the devices of a running kernel: each one's state, memory, queue, restarts, the node "
                        "of a device on another machine (`llmos host`) with its address, and the round trip of its "
                        "last heartbeat.")
    add_kernel_option(p)
    p.add_argument("-v", "--verbose", action="store_true", help="also show dtypes and ops")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one row per device."""
    with connect(args, "llmos-devices") as c:
        devices = c.devices()
    rows = [
        [d.name, d.state, size(d.capacity_bytes), size(d.used_bytes), d.queued, d.restarts, d.node or "-",
         d.address or "-", f"{d.rtt_ms:.2f}" if d.rtt_ms else "-", d.description]
        for d in devices
    ]  # fmt: skip
    print(table(rows, ["DEVICE", "STATE", "CAPACITY", "USED", "QUEUED", "RESTARTS", "NODE", "ADDRESS", "RTT MS", "DESCRIPTION"]))
    if args.verbose:
        for d in devices:
            print(f"\n{d.name}: dtypes {', '.join(d.dtypes)}\n{' ' * len(d.name)}  ops {', '.join(d.ops)}")
    return 0
