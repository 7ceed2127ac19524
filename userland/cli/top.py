"""`llmos top`: a live view of a running kernel, refreshed in place; q quits.

Each refresh asks the kernel for its figures through ordinary syscalls
(`stat`, `ps`, `devices`, `memstat`, `sched`) and shows the rates since the
previous refresh: syscalls and generated tokens per second per process, each device's
utilisation (the share of the wall time its driver spent running work), and
each KV pool's blocks with, for a model's pool, its prefix-cache hit rate
(prompt tokens found in the cache / looked up, since the model was loaded).
"""

from __future__ import annotations

import argparse
import curses

from ..snapshot import Snapshot, process_rates, snapshot, syscall_rate, utilisation
from .common import add_kernel_option, connect, size, table


def add_parser(sub) -> None:
    """Add `llmos top`."""
    p = sub.add_parser("top", help="live view of processes and devices (q quits)", description=__doc__)
    add_kernel_option(p)
    p.add_argument("-d", "--delay", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    p.set_defaults(func=run)


def render(cur: Snapshot, prev: Snapshot | None) -> list[str]:
    """The screen's lines for snapshot `cur`, with rates since `prev` (none on the first screen)."""
    s = cur.stat
    lines = [
        f"llmos top - kernel {s.name}, up {s.uptime_s:.0f}s (q quits)",
        f"{s.processes} processes, {s.devices} devices, {s.syscalls} syscalls ({syscall_rate(cur, prev):.0f}/s), {s.errors} errors",
        "",
    ]
    busy = utilisation(cur, prev)
    rates = process_rates(cur, prev)
    rows = []
    for d in cur.devices:
        mem = cur.memory.get(d.name)
        sched = cur.policies.get(d.name)
        rows.append([
            d.name,
            d.state,
            f"{100 * busy[d.name]:.0f}%" if d.name in busy else "-",
            f"{size(mem.used)} / {size(mem.capacity)}" if mem else "-",
            d.queued,
            sched.policy if sched else "-",
            d.restarts,
        ])
    lines += table(rows, ["DEVICE", "STATE", "UTIL", "MEMORY", "QUEUED", "POLICY", "RESTARTS"]).splitlines()
    lines.append("")
    rows = [
        [
            f"{mem.device}/{kv.pool}", f"{kv.used}/{kv.total}", kv.cached, kv.shared,
            f"{kv.swapped} ({kv.host_used}/{kv.host_total})" if kv.host_total else "-",
            f"{100 * kv.prefix_hits / kv.prefix_tokens:.1f}%" if kv.prefix_tokens else "-",
        ]
        for mem in cur.memory.values()
        for kv in mem.kv_pools
    ]  # fmt: skip
    if rows:
        lines += table(rows, ["KV POOL", "USED", "CACHED", "SHARED", "SWAPPED (HOST)", "HIT RATE"]).splitlines()
        lines.append("")
    rows = []
    for p in sorted(cur.procs, key=lambda p: p.pid):
        calls, tokens = (f"{r:.0f}" for r in rates[p.pid]) if p.pid in rates else ("-", "-")
        rows.append([p.pid, p.name, p.state, size(p.mem_bytes), p.handles, calls, tokens])
    lines += table(rows, ["PID", "PROGRAM", "STATE", "MEMORY", "HANDLES", "CALLS/S", "TOK/S"]).splitlines()
    return lines


def _loop(screen, c, delay: float) -> None:
    try:
        curses.curs_set(0)
    except curses.error:  # a terminal that cannot hide the cursor
        pass
    screen.timeout(int(delay * 1000))
    prev = None
    while True:
        cur = snapshot(c)
        height, width = screen.getmaxyx()
        screen.erase()
        for y, line in enumerate(render(cur, prev)[:height]):
            screen.addnstr(y, 0, line, width - 1)
        screen.refresh()
        prev = cur
        if screen.getch() in (ord("q"), ord("Q")):
            return


def run(args: argparse.Namespace) -> int:
    """Show the live view until q."""
    with connect(args, "llmos-top") as c:
        curses.wrapper(_loop, c, args.delay)
    return 0
