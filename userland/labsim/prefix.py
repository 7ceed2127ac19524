"""`llmos sim prefix`: prefix-cache hits and LRU eviction, on the memory service's KVCache.

Requests arrive one after another; each prompt is one of a few system prompts
followed by tokens of its own, given as token ids, so the cache names its full
blocks by content (a chain hash: a block's name depends on every token before
it). A later prompt that starts with the same blocks maps them instead of
taking new ones. A freed block that holds a named prefix stays *cached*
(counted as free) until a new block is needed and no plain free block is
left: then the least recently freed cached block is evicted (a sequence's
last block before its first). Requests are freed as the seed says, and the
oldest live one is freed first whenever a prompt would not fit. The cache is
the kernel's own (`llmos.services.memory.kv.KVCache`).
"""

from __future__ import annotations

import random

from llmos.services.memory.admission import Admission
from llmos.services.memory.kv import KVCache
from llmos.services.memory.prefix import block_hashes
from llmos.userland.labsim.frame import Run, Step

_OWN = 1000  # token ids of a request's own part start here (system prompts use 0..999)


def _prompt(rid: int, system: int, length: int, own: int) -> list[int]:
    """Token ids: system prompt `system` (`length` ids), then `own` ids unique to request `rid`."""
    return [system * 100 + i for i in range(length)] + [_OWN + rid * 100 + j for j in range(own)]


def _pool(kv: KVCache) -> str:
    """The pool's counts and the cached blocks in eviction order."""
    return (f"used {kv.num_used_blocks}, free {kv.num_free_blocks} (of which cached "
            f"{kv.num_cached_blocks}: {kv.snapshot()['evictable']}, evicted first on the left)")


def simulate(seed: int = 0, blocks: int = 10, block_size: int = 4, requests: int = 6, system: int = 8,
             prompts: int = 2, frees: float = 0.5) -> Run:
    """Draw and run the exercise of `seed`: `requests` prompts over `prompts` system prompts of `system` tokens."""
    if blocks < 2 or block_size < 1 or requests < 1 or system < 0 or prompts < 1 or not 0 <= frees <= 1:
        raise ValueError("need --blocks >= 2, --block-size >= 1, --requests >= 1, --system >= 0, "
                         "--prompts >= 1 and 0 <= --frees <= 1")
    rng = random.Random(f"llmos sim prefix {seed}")
    kv = KVCache(blocks, block_size, watermark=0)
    steps: list[Step] = []
    found_total = looked_total = 0
    per_request = []
    live: list[str] = []

    def free(rid: str, why: str) -> None:
        before = kv.snapshot()["evictable"]
        kv.free(rid)
        live.remove(rid)
        now = kv.snapshot()["evictable"]
        steps.append(Step(f"free {rid}{why}", [f"-> newly cached {[b for b in now if b not in before]}", _pool(kv)]))

    for r in range(requests):
        rid, k = f"r{r}", rng.randrange(prompts)
        own = rng.randint(1, 2 * block_size)
        ids = _prompt(r, k, system, own)
        if kv.blocks_for(len(ids)) > blocks:
            raise ValueError(f"a prompt of {len(ids)} tokens needs more than --blocks {blocks}")
        while kv.can_allocate(ids, 1) is not Admission.OK and live:
            free(live[0], " (the oldest, to make room)")
        hashes = block_hashes(ids, block_size)
        found = len(kv.cached_prefix(hashes))
        before, evictions = kv.snapshot()["evictable"], kv.evictions
        table = kv.allocate(rid, 1, ids)
        evicted = [b for b in before if b not in kv.snapshot()["evictable"] and b not in table[:found]]
        live.append(rid)
        found_total += found * block_size
        looked_total += len(ids)
        per_request.append((rid, k, len(ids), found * block_size, table, evicted))
        steps.append(Step(f"allocate {rid}: system prompt s{k} ({system} tokens) + {own} of its own = {len(ids)} tokens",
                          [f"-> table {table}; found {found} cached block(s) = {found * block_size} tokens; "
                           f"evicted {kv.evictions - evictions}: {evicted}", _pool(kv)]))
        if live and rng.random() < frees:
            free(rng.choice(live), "")
    questions = [
        "for each allocation, how many tokens are found in the cache (only whole blocks are named; a block's "
        "name covers every token before it), and its block table;",
        "after each free, which blocks become cached (the freed blocks that hold a full named block and that "
        "no other table holds);",
        "which allocations evict cached blocks, and which blocks (least recently freed first, a sequence's "
        "last block before its first)?",
        "the hit rate: tokens found / tokens asked for, over all allocations.",
    ]
    answers = [f"{rid} (s{k}, {n} tokens): found {hit}, table {table}, evicted {evicted or 'none'}"
               for rid, k, n, hit, table, evicted in per_request]
    answers.append("cached after each free: as printed after each free above")
    answers.append(f"hit rate: {found_total} / {looked_total} = {found_total / looked_total:.3f}")
    intro = [f"A KV pool of {blocks} blocks of {block_size} tokens with prefix caching (the memory service's "
             f"KVCache). Each prompt starts with one of {prompts} system prompts s0..s{prompts - 1} of {system} "
             f"tokens, then tokens of its own; blocks come from the free list lowest id first, and cached "
             f"blocks are evicted only when no plain free block is left.", "Operations, in order:"]
    args = {"seed": seed, "blocks": blocks, "block_size": block_size, "requests": requests, "system": system,
            "prompts": prompts, "frees": frees}
    return Run(args, intro, steps, questions, answers)
