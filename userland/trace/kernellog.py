"""Read the kernel's JSON event log into a `Timeline`.

Record a log with `llmos boot --log-level debug --log-file FILE`: syscall
enter/exit, device busy/idle, memory, preemption, swap, eviction and
prefix-cache lookup events and each model's KV blocks in use (`kv.used`) are at debug level. A batched model step names every process it served (`pids`); it
becomes one slice per process, stacked in the device's row. Only
events with a monotonic `t` field are placed on the timeline; times become
seconds from the first of them. Lines that are not JSON objects (a stray
traceback) are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from .timeline import Instant, Slice, Timeline


def read_events(path: str | Path) -> list[dict]:
    """The JSON objects of a log file with a `t` field, in file order."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if isinstance(e, dict) and isinstance(e.get("t"), (int, float)):
                events.append(e)
    return events


def from_log(path: str | Path) -> Timeline:
    """The timeline of a kernel log: device work, syscalls, exits, restarts and memory."""
    return from_events(read_events(path))


def from_events(events: list[dict], t0: float | None = None, title: str = "") -> Timeline:
    """The timeline of kernel events (dicts with `event`, `t` and the event's fields, in time order):
    from a log file, or from `trace_read` (`llmos web`). Times become seconds from `t0` (default: the first event's)."""
    tl = Timeline(title=title or (f"llmos kernel {events[0].get('kernel', '')}".rstrip() if events else "llmos kernel"))
    if not events:
        return tl
    if t0 is None:
        t0 = min(e["t"] for e in events)
    open_calls: dict[tuple[int, int], tuple[float, str]] = {}  # (pid, rid) -> (start, syscall)
    open_work: dict[str, tuple[float, dict]] = {}  # device -> (start, busy event)
    pools: dict[str, dict[int, tuple[int, int]]] = {}  # device -> model -> its pool's prefix counts so far
    kv_pools: dict[str, dict[int, tuple[int, int]]] = {}  # device -> model -> its KV blocks (in use, in all)
    last = 0.0

    def close_work(device: str, t: float, **args) -> None:
        start, busy = open_work.pop(device)
        name = busy["op"] if busy.get("op") else busy.get("work", "work")
        args = {"work": busy.get("work"), **args}
        shared = busy.get("pids") or [busy.get("pid", 0)]  # a batched model step serves several processes
        for i, pid in enumerate(shared):
            share = (i / len(shared), (i + 1) / len(shared))
            tl.work.append(Slice(start, t, pid, name, device=device, args=args, share=share))

    def add_device(device: str) -> None:
        if device not in tl.devices:
            tl.devices.append(device)

    for e in events:
        t = e["t"] - t0
        last = max(last, t)
        kind = e.get("event")
        pid = e.get("pid")
        device = e.get("device")
        if kind in ("process.attach", "process.spawn"):
            tl.processes[pid] = e.get("name", "")
        elif kind == "syscall" and pid is not None:
            open_calls[(pid, e.get("rid"))] = (t, e.get("syscall", "?"))
        elif kind == "syscall.exit" and (pid, e.get("rid")) in open_calls:
            start, name = open_calls.pop((pid, e.get("rid")))
            tl.calls.append(Slice(start, t, pid, name, args={"errno": e["errno"]} if e.get("errno") else {}))
        elif kind == "device.busy":
            add_device(device)
            if device in open_work:
                close_work(device, t)
            open_work[device] = (t, e)
        elif kind == "device.idle" and device in open_work:
            close_work(device, t, ok=e.get("ok", True))
        elif kind == "device.online":
            add_device(device)
            tl.capacity[device] = e.get("capacity", 0)
            tl.memory.setdefault(device, []).append((t, 0))
            if e.get("restarts"):
                tl.instants.append(Instant(t, "online", device=device, args={"restarts": e["restarts"]}))
        elif kind in ("device.offline", "device.unloaded"):
            add_device(device)
            if device in open_work:
                close_work(device, t, ok=False)
            tl.instants.append(Instant(t, kind.split(".")[1], device=device, args={"reason": e.get("reason", "")}))
            tl.memory.setdefault(device, []).append((t, 0))
        elif kind == "sched.preempt":
            args = {"victim": pid, "for": e.get("beneficiary"), "mode": e.get("mode")}
            tl.instants.append(Instant(t, "preempt", device=device, args=args))
        elif kind in ("kv.swap_out", "kv.swap_in", "kv.evict"):
            args = {"blocks": e.get("blocks", 0), **({"pid": pid} if pid else {})}
            tl.instants.append(Instant(t, kind[3:].replace("_", " "), device=device, args=args))
        elif kind == "kv.prefix":
            add_device(device)
            models = pools.setdefault(device, {})
            models[e.get("model", 0)] = (e.get("pool_tokens", 0), e.get("pool_hits", 0))
            tl.prefix.setdefault(device, []).append((t, *map(sum, zip(*models.values()))))
        elif kind == "kv.used":
            models = kv_pools.setdefault(device, {})
            models[e.get("model", 0)] = (e.get("used", 0), e.get("total", 0))
            tl.kv.setdefault(device, []).append((t, sum(used for used, _ in models.values())))
            tl.kv_total[device] = sum(total for _, total in models.values())
        elif kind == "device.restart":
            tl.instants.append(Instant(t, "restart", device=device, args={"restarts": e.get("restarts")}))
        elif kind in ("mem.alloc", "mem.free"):
            add_device(device)
            tl.memory.setdefault(device, []).append((t, e.get("used", 0)))
        elif kind == "process.exit":
            tl.processes.setdefault(pid, e.get("name", ""))
            tl.instants.append(Instant(t, "exit", pid=pid, args={"status": e.get("status"), "reason": e.get("reason")}))
            for key in [key for key in open_calls if key[0] == pid]:
                start, name = open_calls.pop(key)
                tl.calls.append(Slice(start, t, pid, name, args={"unfinished": True}))
    for device in list(open_work):
        close_work(device, last, unfinished=True)
    for (pid, _), (start, name) in open_calls.items():
        tl.calls.append(Slice(start, last, pid, name, args={"unfinished": True}))
    return tl
