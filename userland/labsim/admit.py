"""`llmos sim admit`: admission with a watermark and per-process quotas, on the memory service's KVCache.

A seeded trace of prompts from a few processes, and of finished requests
freeing their blocks, on a pool with a watermark and a quota for some
processes. Each prompt is asked of `KVCache.can_allocate`, the kernel's own
admission check: OK (allocated at once), LATER (it waits; after every free
the waiting prompts are asked again in arrival order, and any that is OK
goes, so one that still does not fit holds nobody back), or NEVER (it could
not fit even in an empty pool or within its quota: the kernel answers
ENOMEM).
"""

from __future__ import annotations

import random

from llmos.services.memory.admission import Admission
from llmos.services.memory.kv import KVCache
from llmos.userland.labsim.frame import Run, Step


def _pool(kv: KVCache, procs: int) -> str:
    """Free blocks, the watermark and each process's usage against its quota."""
    owners = ", ".join(f"p{p} {kv.usage(p)}/{'-' if kv.quota(p) is None else kv.quota(p)}"
                       for p in range(1, procs + 1))
    return f"free {kv.num_free_blocks} (watermark {kv.watermark_blocks}); held/quota: {owners}"


def simulate(seed: int = 0, blocks: int = 16, block_size: int = 4, requests: int = 8, procs: int = 2,
             watermark: float = 0.125, quota: int = 6) -> Run:
    """Draw and run the exercise of `seed`: `requests` prompts from `procs` processes; p1 has `quota` blocks."""
    if blocks < 2 or block_size < 1 or requests < 1 or procs < 1 or quota < 1:
        raise ValueError("need --blocks >= 2, --block-size >= 1, --requests >= 1, --procs >= 1 and --quota >= 1")
    rng = random.Random(f"llmos sim admit {seed}")
    kv = KVCache(blocks, block_size, watermark=watermark)  # raises KVError (a ValueError) on a bad watermark
    kv.set_quota(1, quota)
    steps: list[Step] = []
    verdicts: dict[str, list[str]] = {}
    waiting: list[tuple[str, int, int]] = []  # (rid, pid, tokens), arrival order
    live: list[str] = []

    def admit(rid: str, pid: int, tokens: int) -> str:
        answer = kv.can_allocate(tokens, pid)
        if answer is Admission.OK:
            kv.allocate(rid, pid, tokens)
            live.append(rid)
        return answer.name

    for r in range(requests):
        if live and rng.random() < 0.35:
            done = rng.choice(live)
            freed = kv.free(done)
            live.remove(done)
            result = [f"-> {freed} blocks freed"]
            for item in list(waiting):
                if admit(*item) == "OK":
                    waiting.remove(item)
                    verdicts[item[0]].append(f"OK after {done} freed")
                    result.append(f"-> waiting {item[0]} is now OK: table {kv.block_table(item[0])}")
            steps.append(Step(f"{done} finishes: free its blocks", [*result, _pool(kv, procs)]))
        rid, pid = f"r{r}", rng.randint(1, procs)
        tokens = rng.randint(1, (blocks * block_size) // 2)
        if rng.random() < 0.15:
            tokens = rng.randint(quota * block_size + 1, blocks * block_size)  # now and then, one too big
        answer = admit(rid, pid, tokens)
        verdicts[rid] = [answer]
        if answer == "LATER":
            waiting.append((rid, pid, tokens))
        table = f"table {kv.block_table(rid)}" if answer == "OK" else ("waits" if answer == "LATER" else "ENOMEM")
        size = kv.blocks_for(tokens)
        steps.append(Step(f"{rid}: p{pid} asks for a prompt of {tokens} tokens ({size} block{'s' if size > 1 else ''})",
                          [f"-> {answer}: {table}", _pool(kv, procs)]))
    quotas = f"p1 may hold {quota} blocks" + (", the others have no quota" if procs > 1 else "")
    intro = [f"A KV pool of {blocks} blocks of {block_size} tokens (the memory service's KVCache), watermark "
             f"{watermark} of the pool = {kv.watermark_blocks} blocks kept free for growth; {quotas}.",
             "Operations, in order:"]
    questions = [
        "the answer to each prompt: OK, LATER or NEVER, and why (the pool minus the watermark, free blocks "
        "minus the watermark, the process's quota, or its quota minus what it holds);",
        "for each LATER, after which free it is admitted, if ever;",
        "the free blocks and each process's usage at the end.",
    ]
    answers = [f"{rid}: {' -> '.join(v)}" for rid, v in verdicts.items()]
    answers.append(_pool(kv, procs))
    args = {"seed": seed, "blocks": blocks, "block_size": block_size, "requests": requests, "procs": procs,
            "watermark": watermark, "quota": quota}
    return Run(args, intro, steps, questions, answers)
