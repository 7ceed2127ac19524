"""What the consoles (`llmos top`, `llmos web`) show: the kernel's figures at one moment, and rates between two.

A snapshot is read through ordinary syscalls (`stat`, `ps`, `dev_list`,
`memstat`, `sched_get`), so a console sees exactly what any program may.
Rates come from two snapshots: syscalls and generated tokens per second per
process, and each device's utilisation (the share of the wall time its
driver spent running work).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Snapshot:
    """The kernel's figures at one moment (`at`, monotonic seconds of this process)."""

    at: float
    stat: object
    procs: list
    devices: list
    memory: dict  # device -> DeviceMem
    policies: dict  # device -> SchedInfo


def snapshot(c, blocks: bool = False) -> Snapshot:
    """Ask the kernel for everything a console shows (with `blocks`, each KV pool's block picture too)."""
    devices = c.devices()
    online = [d for d in devices if d.state == "online"]
    return Snapshot(
        at=time.monotonic(),
        stat=c.stat(),
        procs=c.ps(),
        devices=devices,
        memory={d.device: d for d in c.memstat(blocks=blocks)},
        policies={d.name: c.sched(d.name) for d in online},
    )


def syscall_rate(cur: Snapshot, prev: Snapshot | None) -> float:
    """Syscalls per second the kernel served between the two snapshots (0 without a previous one)."""
    dt = cur.at - prev.at if prev else 0.0
    return (cur.stat.syscalls - prev.stat.syscalls) / dt if dt > 0 else 0.0


def process_rates(cur: Snapshot, prev: Snapshot | None) -> dict[int, tuple[float, float]]:
    """pid -> (syscalls/s, tokens/s) for the processes in both snapshots."""
    dt = cur.at - prev.at if prev else 0.0
    if dt <= 0:
        return {}
    old = {p.pid: p for p in prev.procs}
    return {
        p.pid: ((p.syscalls - old[p.pid].syscalls) / dt, (p.tokens - old[p.pid].tokens) / dt)
        for p in cur.procs
        if p.pid in old
    }


def utilisation(cur: Snapshot, prev: Snapshot | None) -> dict[str, float]:
    """device -> the share (0 to 1) of the time between the snapshots its driver was busy."""
    dt = cur.at - prev.at if prev else 0.0
    if dt <= 0:
        return {}
    old = {d.name: d.busy_s for d in prev.devices}
    return {d.name: min(max((d.busy_s - old[d.name]) / dt, 0.0), 1.0) for d in cur.devices if d.name in old}
