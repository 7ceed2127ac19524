"""Turn a `llmos sim` run (services/scheduler/sim.py `SimResult`) into a `Timeline`.

The simulated device gets one slice per sequence served in each tick, all
sharing the tick's time; `share` splits the device between them by tokens
fed, so a plot stacks a batch. Each process's track shows its requests, from
arrival to finish, with instants where one was preempted. Memory is the KV
cache: the tokens of context held on the device after each tick (a preempted
sequence gives its KV up, recomputed or swapped out; a finished one frees it).
Times are simulated seconds, and labelled so.
"""

from __future__ import annotations

from llmos.services.scheduler.sim import SimResult

from .timeline import Instant, Slice, Timeline


def from_sim(result: SimResult, device: str = "sim", title: str = "llmos sim") -> Timeline:
    """The timeline of a simulator run on a device called `device`."""
    tl = Timeline(unit="simulated s", title=title, devices=[device], memory_unit="KV tokens")
    by_rid = {s.rid: s for s in result.sequences}
    for s in result.sequences:
        tl.processes.setdefault(s.pid, "")
    held: dict[int, int] = {}  # rid -> tokens of context on the device
    tl.memory[device] = [(0.0, 0)]
    for tick in result.ticks:
        fed = sum(max(1, s.fed) for s in tick.served)
        low = 0.0
        for s in tick.served:
            high = low + max(1, s.fed) / fed
            kind = "train" if s.training else "decode" if s.decode else "prefill"
            args = {"tick": tick.tick, "rid": s.rid, "tokens": s.fed}
            tl.work.append(Slice(tick.start, tick.end, s.pid, kind, device=device, args=args, share=(low, high)))
            low = high
            if not s.training:
                held[s.rid] = s.start + s.fed
        for victim, beneficiary, mode in tick.preempted:
            held.pop(victim, None)
            tl.instants.append(
                Instant(tick.start, f"preempted ({mode})", pid=by_rid[victim].pid, args={"rid": victim, "for": beneficiary})
            )
        for rid, tokens in tick.hits:  # the prefix cache served the start of its context
            tl.instants.append(Instant(tick.start, "prefix hit", pid=by_rid[rid].pid, args={"rid": rid, "tokens": tokens}))
        for rid in tick.finished:
            held.pop(rid, None)
        tl.memory[device].append((tick.end, sum(held.values())))
    for s in result.sequences:
        end = s.finished_at if s.finished_at is not None else result.end
        tl.calls.append(Slice(s.request.arrival, end, s.pid, f"r{s.rid}", args={"rid": s.rid, "preemptions": s.preemptions}))
    return tl
