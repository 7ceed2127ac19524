"""`llmos sim lifecycle`: what each process holds, and what comes back when it ends.

A seeded story in one kernel: p1 (an attached program) spawns children with
quotas (now and then a child spawns one of its own), processes allocate
tensors on cpu0 and KV sequences in a pool, share tensor handles and free
them; each child then ends its own way: it exits, its parent kills it, or it
is stopped (SIGSTOP) until its lease runs out; and p1 waits for its
children. The questions: what each call answers, what each process holds
after each step, which bytes and blocks come back at each end (a shared
tensor lives on while another process holds it, and the kernel pays for it
once its allocator has gone), and what each wait reports. The books are the
kernel's own (`userland/labsim/procworld.py`).
"""

from __future__ import annotations

import random

from llmos.userland.labsim.frame import Run, Step
from llmos.kernel.proc import Process
from llmos.userland.labsim.procworld import KIB, Reclaimed, Refused, World, kib, plural

SIZES = [256, 512, 768, 1024, 1536]  # KiB of a tensor
QUOTAS = [None, 1024, 2048]  # KiB of a child's cpu0 quota (None: its parent's)
KV_QUOTAS = [None, 2, 4]  # a child's KV quota in blocks (None: its parent's)
ENDS = ["exit", "kill", "lease"]  # how a child ends, one each first; "stay" for none


def simulate(seed: int = 0, children: int = 3, calls: int = 7, capacity: int = 4096, blocks: int = 12,
             block_size: int = 4) -> Run:
    """Draw and run the exercise of `seed`: `children` spawned, `calls` calls among them, cpu0 of `capacity` KiB."""
    if children < 1 or calls < 0 or capacity < 1024 or blocks < 2 or block_size < 1:
        raise ValueError("need --children >= 1, --calls >= 0, --capacity >= 1024 (KiB), --blocks >= 2 "
                         "and --block-size >= 1")
    rng = random.Random(f"llmos sim lifecycle {seed}")
    w = World(capacity * KIB, blocks, block_size)
    steps: list[Step] = []
    answers = ["each call's answer and what every process holds: as printed after each step above;"]

    def step(op: str, call) -> None:
        try:
            result = call()
        except Refused as exc:
            result = f"-> {exc}"
        steps.append(Step(op, [result, *w.state()]))

    if rng.random() < 0.5:
        size = rng.choice(SIZES)
        step(f"p1 allocates a tensor of {size} KiB on cpu0", lambda: f"-> ok: handle {w.alloc(1, size * KIB)}")
    for i in range(children):
        parent = 1 if i == 0 or rng.random() < 0.65 else rng.randint(2, i + 1)
        quota, kv_quota = rng.choice(QUOTAS), rng.choice(KV_QUOTAS)
        asked = [f"quota {quota} KiB"] * (quota is not None) + [f"kv_quota {kv_quota}"] * (kv_quota is not None)
        step(f"p{parent} spawns a child" + (f" ({', '.join(asked)})" if asked else ""),
             lambda: f"-> ok: p{w.spawn(parent, None if quota is None else quota * KIB, kv_quota)}")
    for kind, pid in plan(rng, [p for p in w.procs.by_pid if p != w.main], calls):
        if kind == "call":
            step(*call(rng, w))
            continue
        op, run = end(rng, w, kind, pid)
        step(op, run)
        if steps[-1].result[0].startswith("-> back"):
            answers.append(f"step {len(steps)}, {op}: {steps[-1].result[0][3:]}")
    for child in rng.sample(w.procs.children(w.main), k=len(w.procs.children(w.main))):
        if rng.random() < 0.75:
            step(f"p1 waits for p{child.pid}", lambda: "-> status {}, {}".format(*w.wait(w.main, child.pid)))
            if not steps[-1].result[0].startswith("-> E"):
                answers.append(f"step {len(steps)}, p1 waits for p{child.pid}: {steps[-1].result[0][3:]}")
    zombies = [f"p{p.pid}" for p in w.procs.by_pid.values() if p.state == "exited"]
    answers += ["zombies at the end: " + (", ".join(zombies) or "none"), w.state()[-1]]
    intro = [f"One kernel: cpu0 has {capacity} KiB; a KV pool of {blocks} blocks of {block_size} tokens (made by "
             f"p1 before step 1; the pool's own memory is not counted below). Leases last {w.lease_s:.0f} s.",
             "p1 has attached (it has no quota). Events, in order (a wait is a wait with timeout 0):"]
    questions = [
        "the answer to each call: ok (and which handle or pid) or the error, and why;",
        "after each step, what each process holds: its handles and what each names, the bytes it pays for on "
        "cpu0, its KV blocks; and what the kernel pays for;",
        "at each exit, kill and lease expiry: which bytes and KV blocks come back at once, which tensors stay "
        "alive and who pays for them then, which processes are orphaned or leave the table;",
        "what each wait reports (status and reason), and which processes are left as zombies at the end.",
    ]
    args = {"seed": seed, "children": children, "calls": calls, "capacity": capacity, "blocks": blocks,
            "block_size": block_size}
    return Run(args, intro, steps, questions, answers)


def plan(rng: random.Random, children: list[int], calls: int) -> list[tuple[str, int]]:
    """The events after the spawns: `calls` calls, with each child's end placed among them (a stop, then later
    its lease expiry; an exit; a kill), mostly in the later two thirds."""
    order: list[tuple[str, int]] = [("call", 0)] * calls
    ends = rng.sample(ENDS, k=min(len(ENDS), len(children)))
    ends += [rng.choice([*ENDS, "stay"]) for _ in children[len(ENDS):]]
    for pid, how in zip(children, ends):
        if how == "stay":
            continue
        at = rng.randint(len(order) // 3, len(order))
        order.insert(at, ("stop" if how == "lease" else how, pid))
        if how == "lease":
            order.insert(rng.randint(at + 1, len(order)), ("expire", pid))
    return order


def call(rng: random.Random, w: World) -> tuple[str, object]:
    """A call by a process that can make one: alloc, KV alloc, share or free; its text and the call."""
    active = [p for p in w.procs.by_pid.values() if p.state == "running" and p.pid not in w.stopped]
    tensors = [(p, h) for p in active for h in p.handles]
    handles = [(p, h) for p in active for h in [*p.handles, *p.kvseqs]]
    others = len(w.procs.by_pid) > 1
    kind = rng.choices(["alloc", "kv", "share", "free"],
                       weights=[4, 2, 3 if tensors and others else 0, 1 if handles else 0])[0]
    if kind == "alloc":
        pid, size = busy(rng, active).pid, rng.choice(SIZES)
        return f"p{pid} allocates a tensor of {size} KiB on cpu0", lambda: f"-> ok: handle {w.alloc(pid, size * KIB)}"
    if kind == "kv":
        pid, tokens = busy(rng, active).pid, rng.randint(1, 3 * w.kv.block_size)
        return (f"p{pid} allocates a KV sequence of {tokens} token{'s' if tokens > 1 else ''}",
                lambda: f"-> ok: handle {w.kv_alloc(pid, tokens)}")
    if kind == "share":
        proc, handle = rng.choice(tensors)
        targets = [p.pid for p in w.procs.by_pid.values() if p is not proc]
        live = [pid for pid in targets if w.procs.by_pid[pid].state == "running"]
        to = rng.choice(live if live and rng.random() < 0.85 else targets)
        return (f"p{proc.pid} shares handle {handle} with p{to}",
                lambda: f"-> ok: handle {w.share(proc.pid, handle, to)} in p{to}")
    proc, handle = rng.choice(handles)
    return (f"p{proc.pid} frees handle {handle}",
            lambda: "-> ok: " + ("memory back" if w.free(proc.pid, handle) else "nothing back (still held)"))


def end(rng: random.Random, w: World, how: str, pid: int) -> tuple[str, object]:
    """The text and the call of one child's stop, exit, kill (by its parent, else by p1) or lease expiry."""
    if how == "stop":
        return (f"p{pid} is stopped (SIGSTOP): no more calls, no heartbeats",
                lambda: w.stop(pid) or "-> the kernel sees nothing yet")
    if how == "expire":
        return f"{w.lease_s:.0f} s pass: the kernel finds p{pid}'s lease expired", lambda: ended(w.expire(pid))
    if how == "exit":
        code = rng.choice([0, 1, 3])
        return f"p{pid} exits: exit({code})", lambda: ended(w.exit(pid, code))
    parent = w.procs.by_pid[pid].ppid
    alive = parent in w.procs.by_pid and w.procs.by_pid[parent].state == "running" and parent not in w.stopped
    killer = parent if alive else w.main
    return f"p{killer} kills p{pid} (signal 15)", lambda: ended(w.kill(killer, pid))


def ended(out: Reclaimed) -> str:
    """What one end gave back, and what it left, in words."""
    text = f"-> back at once: {kib(out.freed_bytes)} and {plural(out.freed_blocks, 'KV block')}"
    if out.kept:
        text += "; alive still: " + ", ".join(out.kept)
    if out.orphans:
        text += "; orphaned: " + ", ".join(f"p{p}" for p in out.orphans)
    if out.removed:
        text += "; left the table (nobody can wait for them): " + ", ".join(f"p{p}" for p in out.removed)
    return text


def busy(rng: random.Random, procs: list[Process]) -> Process:
    """One of `procs`: children and those that hold handles are likelier than p1 and the empty-handed."""
    return rng.choices(procs, weights=[1 + 2 * (p.pid != 1) + bool(p.handles or p.kvseqs) for p in procs])[0]
