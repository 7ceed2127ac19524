"""Write a `Timeline` as Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) opens.

Each device is a trace process ("device cpu0") whose threads hold its work as
complete ("X") events named after the op and carrying the owner, plus a
memory counter ("C") and, where models looked prompts up in the prefix cache,
a counter of its hit rate so far; each llmos process is a trace process ("pid 3 matmul")
whose threads hold its syscalls, with instant ("i") events for exits. Slices
that overlap on one track go to further threads, because trace viewers need
the slices of a thread properly nested. Timestamps are microseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

from .timeline import Slice, Timeline, lanes

DEVICE_PID_BASE = 1_000_000  # trace pids of devices, far above llmos pids


def _us(t: float) -> float:
    return round(t * 1e6, 3)


def _meta(pid: int, tid: int | None, key: str, args: dict) -> dict:
    e = {"ph": "M", "name": key, "pid": pid, "args": args}
    if tid is not None:
        e["tid"] = tid
    return e


def _slices(slices: list[Slice], trace_pid, category: str, lane_name: str) -> list[dict]:
    """X events, each on the lane (thread) that keeps its track's slices from overlapping."""
    out, named = [], set()
    groups: dict[int, list[Slice]] = {}
    for s in slices:
        groups.setdefault(trace_pid(s), []).append(s)
    for pid, group in groups.items():
        for s, lane in zip(group, lanes(group)):
            tid = lane + 1
            if (pid, tid) not in named:
                named.add((pid, tid))
                out.append(_meta(pid, tid, "thread_name", {"name": lane_name if lane == 0 else f"{lane_name} {tid}"}))
            out.append(
                {
                    "ph": "X",
                    "cat": category,
                    "name": s.name,
                    "ts": _us(s.start),
                    "dur": max(0.0, round(_us(s.end) - _us(s.start), 3)),  # so back-to-back slices meet exactly
                    "pid": pid,
                    "tid": tid,
                    "args": s.args,
                }
            )
    return out


def to_chrome(tl: Timeline) -> dict:
    """The trace-event JSON object (`{"traceEvents": [...]}`) of a timeline."""
    dev_pid = {d: DEVICE_PID_BASE + i for i, d in enumerate(tl.devices)}
    events: list[dict] = []
    for i, d in enumerate(tl.devices):
        events.append(_meta(dev_pid[d], None, "process_name", {"name": f"device {d}"}))
        events.append(_meta(dev_pid[d], None, "process_sort_index", {"sort_index": i}))
    pids = sorted({s.pid for s in tl.calls} | {i.pid for i in tl.instants if i.pid is not None} | set(tl.processes) - {0})
    for pid in pids:
        events.append(_meta(pid, None, "process_name", {"name": tl.process_name(pid)}))
        events.append(_meta(pid, None, "process_sort_index", {"sort_index": len(tl.devices) + pid}))
    work = [
        Slice(s.start, s.end, s.pid, s.name, s.device, {"owner": tl.process_name(s.pid), "pid": s.pid, **s.args})
        for s in tl.work
    ]
    events += _slices(work, lambda s: dev_pid[s.device], "device", "work")
    calls_name = "syscalls" if tl.unit == "s" else "requests"
    events += _slices(tl.calls, lambda s: s.pid, "syscall" if tl.unit == "s" else "request", calls_name)
    for i in tl.instants:
        pid = dev_pid[i.device] if i.device is not None else i.pid
        events.append({"ph": "i", "s": "p", "name": i.name, "ts": _us(i.t), "pid": pid, "tid": 1, "args": i.args})
    for d, points in tl.memory.items():
        for t, used in points:
            events.append(
                {"ph": "C", "name": f"memory ({tl.memory_unit})", "ts": _us(t), "pid": dev_pid[d], "args": {"used": used}}
            )
    for d in tl.prefix:
        for t, rate in tl.hit_rate(d):
            events.append({"ph": "C", "name": "prefix-cache hit rate (%)", "ts": _us(t), "pid": dev_pid[d],
                           "args": {"hit rate": round(rate, 2)}})  # fmt: skip
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"source": tl.title, "clock": tl.unit}}


def write_chrome(tl: Timeline, path: str | Path) -> None:
    """Write the trace-event JSON of a timeline to `path`."""
    Path(path).write_text(json.dumps(to_chrome(tl)))
