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
import time
from dataclasses import dataclass

from .common import add_kernel_option, connect, size, table


def add_parser(sub) -> None:
    """Add `llmos top`."""
    p = sub.add_parser("top", help="live view of processes and devices (q quits)", description=__doc__)
    add_kernel_option(p)
    p.add_argument("-d", "--delay", type=float, default=1.0, metavar="S", help="seconds between refreshes (default 1)")
    p.set_defaults(func=run)


@dataclass
class Snapshot:
    """The kernel's figures at one moment (`at`, monotonic seconds of this process)."""

    at: float
    stat: object
    procs: list
    devices: list
    memory: dict  # device -> DeviceMem
    policies: dict  # device -> SchedInfo


def snapshot(c) -> Snapshot:
    """Ask the kernel for everything `top` shows."""
    devices = c.devices()
    online = [d for d in devices if d.state == "online"]
    return Snapshot(
        at=time.monotonic(),
        stat=c.stat(),
        procs=c.ps(),
        devices=devices,
        memory={d.device: d for d in c.memstat()},
        policies={d.name: c.sched(d.name) for d in online},
    )


def render(cur: Snapshot, prev: Snapshot | None) -> list[str]:
    """The screen's lines for snapshot `cur`, with rates since `prev` (none on the first screen)."""
    dt = cur.at - prev.at if prev else 0.0
    old = {p.pid: p for p in prev.procs} if prev else {}
    old_busy = {d.name: d.busy_s for d in prev.devices} if prev else {}
    s = cur.stat
    rate = (s.syscalls - prev.stat.syscalls) / dt if dt > 0 else 0.0
    lines = [
        f"llmos top - kernel {s.name}, up {s.uptime_s:.0f}s (q quits)",
        f"{s.processes} processes, {s.devices} devices, {s.syscalls} syscalls ({rate:.0f}/s), {s.errors} errors",
        "",
    ]
    rows = []
    for d in cur.devices:
        busy = (d.busy_s - old_busy[d.name]) / dt if dt > 0 and d.name in old_busy else None
        mem = cur.memory.get(d.name)
        sched = cur.policies.get(d.name)
        rows.append([
            d.name,
            d.state,
            f"{100 * min(busy, 1.0):.0f}%" if busy is not None else "-",
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
        was = old.get(p.pid) if dt > 0 else None
        calls = f"{(p.syscalls - was.syscalls) / dt:.0f}" if was else "-"
        tokens = f"{(p.tokens - was.tokens) / dt:.0f}" if was else "-"
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
