"""`llmos driver list|load|unload`: hot-swap device drivers on a running kernel."""

import argparse

from ..errors import LlmosError
from .common import add_kernel_option, connect, table


def add_parser(sub) -> None:
    """Add `llmos driver`."""
    p = sub.add_parser(
        "driver",
        help="list, load or unload device drivers on a running kernel",
        description="List the drivers the kernel's plugins provide (built-in ones, LLMOS_PLUGINS and installed "
        "packages of the `llmos` entry-point group), start one on the running kernel, or stop one. Unloading "
        "fails the work in flight on its devices with EIO and loses their tensors. Load and unload need the "
        "kernel's admin key (you must own the kernel).",
    )
    add_kernel_option(p)
    p.add_argument("action", choices=["list", "load", "unload"])
    p.add_argument("kind", nargs="?", help="driver kind (cpu, mocktpu, ...) for load and unload")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Do the action and print the driver table."""
    if args.action != "list" and not args.kind:
        print(f"llmos driver {args.action}: which driver? (see `llmos driver list`)")
        return 2
    with connect(args, "llmos-driver", admin=args.action != "list") as c:
        try:
            if args.action == "load":
                drivers = c.driver_load(args.kind)
            elif args.action == "unload":
                drivers = c.driver_unload(args.kind)
            else:
                drivers = c.drivers()
        except LlmosError as exc:
            print(f"llmos driver {args.action}: {exc.message}")
            return 1
    print(table([[d.kind, "yes" if d.loaded else "no", ", ".join(d.devices) or "-", d.help] for d in drivers], ["KIND", "LOADED", "DEVICES", "DESCRIPTION"]))
    return 0
