"""`llmos trace`: turn a kernel's event log into a Perfetto trace or a PNG plot.

Record with `llmos boot --log-level debug --log-file kernel.log` (syscall,
device and memory events are at debug level), run your programs, stop the
kernel, then:

  llmos trace export kernel.log -o trace.json   # open in https://ui.perfetto.dev
  llmos trace plot kernel.log -o plot.png       # Gantt chart per device + memory
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    """Add `llmos trace export` and `llmos trace plot`."""
    p = sub.add_parser(
        "trace", help="export a kernel event log as a Perfetto trace or a PNG plot",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write Chrome/Perfetto trace-event JSON")
    export.add_argument("log", help="the kernel's JSON event log (boot with --log-level debug --log-file LOG)")
    export.add_argument("-o", "--output", default="trace.json", help="trace file to write (default trace.json)")
    export.set_defaults(func=run_export)
    plot = actions.add_parser("plot", help="write a PNG: who ran on each device, and memory over time")
    plot.add_argument("log", help="the kernel's JSON event log (boot with --log-level debug --log-file LOG)")
    plot.add_argument("-o", "--output", default="plot.png", help="PNG file to write (default plot.png)")
    plot.set_defaults(func=run_plot)


def _timeline(path: str):
    from llmos.userland.trace import from_log

    try:
        tl = from_log(path)
    except OSError as exc:
        sys.exit(f"llmos trace: cannot read {path}: {exc.strerror}")
    if not tl.work and not tl.calls:
        print(
            f"llmos trace: {path} has no device or syscall events; boot the kernel with --log-level debug",
            file=sys.stderr,
        )
    return tl


def run_export(args: argparse.Namespace) -> int:
    """Write the trace-event JSON of a kernel log."""
    from llmos.userland.trace import write_chrome

    tl = _timeline(args.log)
    write_chrome(tl, args.output)
    print(f"wrote {args.output}: {len(tl.work)} device slices, {len(tl.calls)} syscalls; open it in https://ui.perfetto.dev")
    return 0


def run_plot(args: argparse.Namespace) -> int:
    """Write the PNG plot of a kernel log."""
    from llmos.userland.trace.plot import plot

    tl = _timeline(args.log)
    plot(tl, args.output)
    print(f"wrote {args.output}")
    return 0
