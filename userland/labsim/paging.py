"""`llmos sim paging`: block tables, forks and copy-on-write, on the memory service's KVCache.

A seeded sequence of operations on one small pool: a prompt is allocated,
then sequences are forked, appended to and freed. The questions: each
sequence's block table after each step, which appends copied a block (and
from where to where), which physical block and slot hold token t of
sequence s at the end, and the blocks' reference counts. The cache is the
kernel's own (`llmos.services.memory.kv.KVCache`); token counts, not ids, are
stored, so no prefix caching takes part (see `llmos sim prefix` for that).
"""

from __future__ import annotations

import random

from llmos.services.memory.kv import KVCache
from llmos.userland.labsim.frame import Run, Step


def state(kv: KVCache) -> list[str]:
    """Each sequence's table and length, and the pool's reference counts, as lines."""
    lines = []
    for seq_id in kv.sequences():
        info = kv.sequence_info(seq_id)
        lines.append(f"{seq_id}: {info['num_tokens']:2} tokens, table {info['table']}")
    ref = kv.snapshot()["ref"]
    lines.append(f"ref counts {ref}; free {kv.num_free_blocks}")
    return lines


def simulate(seed: int = 0, blocks: int = 12, block_size: int = 4, ops: int = 6, probes: int = 3) -> Run:
    """Draw and run the exercise of `seed`: `ops` operations after the first allocation, `probes` token lookups."""
    if blocks < 4 or block_size < 1 or ops < 0 or probes < 0:
        raise ValueError("need --blocks >= 4, --block-size >= 1, --ops >= 0 and --probes >= 0")
    rng = random.Random(f"llmos sim paging {seed}")
    kv = KVCache(blocks, block_size, watermark=0)
    prompt = rng.randint(block_size + 1, 3 * block_size - 1)
    steps = [Step(f'allocate("s0", {prompt})')]
    kv.allocate("s0", 1, prompt)
    steps[-1].result = [f"-> table {kv.block_table('s0')}", *state(kv)]
    copies_seen = []
    names = 1
    for _ in range(ops):
        live = kv.sequences()
        choice = rng.random()
        if choice < 0.3 and len(live) < 4:
            parent, child = rng.choice(live), f"s{names}"
            names += 1
            kv.fork(parent, child)
            steps.append(Step(f'fork("{parent}", "{child}")', [f"-> table {kv.block_table(child)}", *state(kv)]))
            continue
        if choice < 0.4 and len(live) > 1:
            victim = rng.choice(live)
            freed = kv.free(victim)
            steps.append(Step(f'free("{victim}")', [f"-> {freed} blocks back in the free list", *state(kv)]))
            continue
        seq = rng.choice(live)
        n = rng.randint(1, block_size + 1)
        if kv.blocks_needed([(seq, n)]) > kv.num_free_blocks:
            victim = max(live, key=lambda s: len(kv.block_table(s)))
            freed = kv.free(victim)
            steps.append(Step(f'free("{victim}")', [f"-> {freed} blocks back in the free list", *state(kv)]))
            continue
        copies = kv.append(seq, n)
        copies_seen.append((len(steps) + 1, seq, copies))
        steps.append(Step(f'append("{seq}", {n})', [f"-> copies {copies}", *state(kv)]))
    probes_asked = []
    live = kv.sequences()
    for _ in range(probes if live else 0):
        seq = rng.choice(live)
        t = rng.randrange(kv.sequence_info(seq)["num_tokens"])
        probes_asked.append((seq, t, kv.block_table(seq)[t // block_size], t % block_size))
    questions = [
        "the block table of every sequence after each step (allocate and append take counts of tokens; "
        "blocks come from the free list, lowest id first; a freed block goes back to it);",
        "which appends copied a block (copy-on-write), and from which block to which; why did the others not?",
    ]
    questions += [f"which physical block, and which slot in it, holds token {t} of {seq} at the end?"
                  for seq, t, _, _ in probes_asked]
    questions.append("the reference count of every block at the end, and how many blocks are free.")
    answers = ["tables: as printed after each step above;"]
    copied = [f"step {i} ({seq}): {copies}" for i, seq, copies in copies_seen if copies]
    answers.append("copies: " + ("; ".join(copied) if copied else "none") + " (only an append into a partial "
                   "last block that another table also holds copies it; full blocks are never written again)")
    answers += [f"token {t} of {seq}: block {block} (entry {t // block_size} of its table), slot {slot}"
                for seq, t, block, slot in probes_asked]
    answers.append(state(kv)[-1])
    intro = [f"A KV pool of {blocks} blocks of {block_size} tokens (the memory service's KVCache); "
             f"sequences belong to one process.",
             "Operations, in order:"]
    args = {"seed": seed, "blocks": blocks, "block_size": block_size, "ops": ops, "probes": probes}
    return Run(args, intro, steps, questions, answers)
