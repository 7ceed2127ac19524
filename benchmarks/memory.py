"""Paged KV cache against contiguous reservation: memory waste, block throughput, beam sharing.

One seeded workload of `--sequences` requests drives three measurements in
the same run. Each request has a prompt length and an output length drawn from
lognormal distributions (heavy-tailed: most requests are short, a few are
very long), capped so that prompt + `--max-new-tokens` fits `--max-len`.

1. Waste. A continuous-batching loop runs up to `--concurrency` requests at
   once: a request is admitted with its prompt, then gains one token per step
   until its output length is reached, then leaves. After every step we add
   up, over the running requests, the token slots the paged allocator has
   handed out (used blocks x block size), the tokens actually held, and the
   slots a contiguous allocator would have reserved (prompt +
   max-new-tokens per request: it must reserve the most the request may
   generate, since it cannot know when it stops).
     paged_waste_pct       = 100 * (paged slots - tokens) / paged slots
     contiguous_useful_pct = 100 * tokens / reserved slots
     memory_ratio          = reserved slots / paged slots
   all summed over every step, i.e. time-averaged. The contiguous baseline is
   bookkeeping only and ignores external fragmentation, which would only make
   it worse. The paged numbers come from the real `KVCache` (count-only
   appends, so no prefix hashing), which is also timed:
     decode_tokens_per_s   = tokens appended / seconds inside append_many.
2. Throughput. The requests' final lengths are allocated `--concurrency` at a
   time (one `allocate` call each, token counts, no prefix hashing) and then
   freed with one `free_many`, over and over for at least `--ops-seconds`.
     block_ops_per_s       = (blocks allocated + blocks freed) / seconds
   where the seconds are those inside `allocate` and `free_many`.
3. Beam search. The first `--beam-requests` requests are decoded one at a
   time with `--beam-width` beams: the prompt is allocated once and forked.
   Before each step the new beams are chosen from the current ones (the i-th
   best is picked with weight width - i; a beam picked k times continues and
   is forked k - 1 times, a beam not picked is freed), then every beam
   appends one token (copy-on-write copies a shared partial last block).
   After each step the blocks in use are compared with copying, where each
   beam holds its own copy of every block it needs.
     beam_sharing_saving_pct = 100 * (1 - paged blocks / copied blocks)
   summed over every step.
"""

import argparse
import math
import random
import time
from collections import deque

from llmos.services.memory.kv import KVCache


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the workload parameters to `llmos bench memory`."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload (default 0)")
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default 16)")
    parser.add_argument("--sequences", type=int, default=2000, help="requests in the workload (default 2000)")
    parser.add_argument("--concurrency", type=int, default=256, help="requests running at once (default 256)")
    parser.add_argument("--prompt-median", type=int, default=100, help="median prompt length in tokens (default 100)")
    parser.add_argument("--output-median", type=int, default=200, help="median output length in tokens (default 200)")
    parser.add_argument("--sigma", type=float, default=1.0, help="lognormal shape of both lengths (default 1.0)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=1024, help="output cap each request reserves (default 1024)"
    )
    parser.add_argument("--max-len", type=int, default=4096, help="model context length (default 4096)")
    parser.add_argument("--beam-width", type=int, default=4, help="beams per beam-search request (default 4)")
    parser.add_argument("--beam-requests", type=int, default=200, help="beam-search requests (default 200)")
    parser.add_argument(
        "--ops-seconds", type=float, default=1.0, help="least time spent measuring block throughput (default 1.0)"
    )


def run(args: argparse.Namespace) -> dict:
    """Generate the workload and run the three measurements; returns the figures."""
    requests = workload(args)
    waste = measure_waste(requests, args)
    ops = measure_block_ops(requests, args)
    beams = measure_beams(requests[: args.beam_requests], args)
    return {
        "seed": args.seed,
        "block_size": args.block_size,
        "sequences": len(requests),
        "concurrency": args.concurrency,
        "prompt_median": args.prompt_median,
        "output_median": args.output_median,
        "sigma": args.sigma,
        "max_new_tokens": args.max_new_tokens,
        "max_len": args.max_len,
        "mean_prompt": round(sum(p for p, _ in requests) / len(requests), 1),
        "mean_output": round(sum(o for _, o in requests) / len(requests), 1),
        "max_prompt": max(p for p, _ in requests),
        "max_output": max(o for _, o in requests),
        **waste,
        **ops,
        **beams,
    }


def workload(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(prompt length, output length) of each request, lognormal and capped, from the seed."""
    rng = random.Random(args.seed)
    prompt_cap = args.max_len - args.max_new_tokens
    if prompt_cap < 1:
        raise SystemExit(f"--max-len ({args.max_len}) must exceed --max-new-tokens ({args.max_new_tokens})")

    def draw(median: int, cap: int) -> int:
        """One lognormal length with this median, clamped to [1, cap]."""
        return min(cap, max(1, round(rng.lognormvariate(math.log(median), args.sigma))))

    return [
        (draw(args.prompt_median, prompt_cap), draw(args.output_median, args.max_new_tokens))
        for _ in range(args.sequences)
    ]


def measure_waste(requests: list[tuple[int, int]], args: argparse.Namespace) -> dict:
    """Continuous batching through the paged cache, with contiguous reservation tracked alongside."""
    block_size = args.block_size
    kv = KVCache(args.concurrency * -(-args.max_len // block_size), block_size, watermark=0)
    waiting = deque(enumerate(requests))
    left: dict[int, int] = {}  # running request -> output tokens still to generate
    tokens = reserved = 0  # held / reserved by the running requests now
    paged_slots = held_slots = reserved_slots = appended = 0
    seconds = 0.0
    while waiting or left:
        while waiting and len(left) < args.concurrency:
            seq_id, (prompt, output) = waiting.popleft()
            kv.allocate(seq_id, seq_id % 8, prompt)
            left[seq_id] = output
            tokens += prompt
            reserved += prompt + args.max_new_tokens
        step = [(seq_id, 1) for seq_id in left]
        start = time.perf_counter()
        kv.append_many(step)
        seconds += time.perf_counter() - start
        appended += len(step)
        tokens += len(step)
        paged_slots += kv.num_used_blocks * block_size
        held_slots += tokens
        reserved_slots += reserved
        for seq_id in list(left):
            left[seq_id] -= 1
            if not left[seq_id]:
                del left[seq_id]
                kv.free(seq_id)
                prompt, output = requests[seq_id]
                tokens -= prompt + output
                reserved -= prompt + args.max_new_tokens
    return {
        "paged_waste_pct": round(100 * (paged_slots - held_slots) / paged_slots, 2),
        "contiguous_useful_pct": round(100 * held_slots / reserved_slots, 2),
        "contiguous_waste_pct": round(100 * (reserved_slots - held_slots) / reserved_slots, 2),
        "memory_ratio": round(reserved_slots / paged_slots, 2),
        "decode_tokens_per_s": round(appended / seconds),
    }


def measure_block_ops(requests: list[tuple[int, int]], args: argparse.Namespace) -> dict:
    """Allocate and free the requests' final lengths in batches of `concurrency`; blocks per second."""
    block_size = args.block_size
    kv = KVCache(args.concurrency * -(-args.max_len // block_size), block_size, watermark=0)
    lengths = [prompt + output for prompt, output in requests]
    ids = list(range(len(lengths)))
    batches = [ids[i : i + args.concurrency] for i in range(0, len(ids), args.concurrency)]
    ops = 0
    seconds = 0.0
    allocate = kv.allocate
    while seconds < args.ops_seconds:
        for batch in batches:
            start = time.perf_counter()
            for seq_id in batch:
                allocate(seq_id, 0, lengths[seq_id])
            freed = kv.free_many(batch)
            seconds += time.perf_counter() - start
            ops += 2 * freed
    return {"block_ops_per_s": round(ops / seconds), "block_ops": ops}


def measure_beams(requests: list[tuple[int, int]], args: argparse.Namespace) -> dict:
    """Beam search with fork and copy-on-write against every beam holding its own copy."""
    rng = random.Random(args.seed + 1)
    width = args.beam_width
    weights = [width - i for i in range(width)]
    kv = KVCache(width * -(-args.max_len // args.block_size) + width, args.block_size, watermark=0)
    paged = copied = cow_copies = 0
    next_id = 0
    for prompt, output in requests:
        beams = [next_id]
        kv.allocate(next_id, 0, prompt)
        for _ in range(width - 1):
            next_id += 1
            kv.fork(beams[0], next_id)
            beams.append(next_id)
        next_id += 1
        for _ in range(output):
            picks = rng.choices(range(width), weights, k=width)
            survivors = []
            for rank, beam in enumerate(beams):
                if rank not in picks:
                    kv.free(beam)
                    continue
                survivors.append(beam)
                for _ in range(picks.count(rank) - 1):
                    kv.fork(beam, next_id)
                    survivors.append(next_id)
                    next_id += 1
            beams = survivors
            cow_copies += len(kv.append_many([(beam, 1) for beam in beams]))
            paged += kv.num_used_blocks
            copied += width * kv.blocks_for(kv.sequence_info(beams[0])["num_tokens"])
        kv.free_many(beams)
    return {
        "beam_width": width,
        "beam_requests": len(requests),
        "beam_sharing_saving_pct": round(100 * (1 - paged / copied), 2),
        "beam_cow_copies": cow_copies,
    }


def report(result: dict) -> str:
    """A table of the figures for people, workload first."""
    r = result
    lines = [
        f"workload: seed {r['seed']}, {r['sequences']} requests, {r['concurrency']} at once, "
        f"block size {r['block_size']} tokens",
        f"  prompt: lognormal median {r['prompt_median']} (mean {r['mean_prompt']}, max {r['max_prompt']}); "
        f"output: median {r['output_median']} (mean {r['mean_output']}, max {r['max_output']}); sigma {r['sigma']}",
        f"  contiguous reserves prompt + {r['max_new_tokens']} tokens; context {r['max_len']}",
        "",
        f"{'measure':<38}{'paged':>14}{'contiguous':>14}",
        f"{'memory holding tokens (%)':<38}{100 - r['paged_waste_pct']:>14.2f}{r['contiguous_useful_pct']:>14.2f}",
        f"{'memory allocated but empty (%)':<38}{r['paged_waste_pct']:>14.2f}{r['contiguous_waste_pct']:>14.2f}",
        f"{'memory used, contiguous / paged':<38}{r['memory_ratio']:>14.2f}{'':>14}",
        "",
        f"{'block allocations + frees per second':<38}{r['block_ops_per_s']:>14,}",
        f"{'decode tokens appended per second':<38}{r['decode_tokens_per_s']:>14,}",
        f"{'beam search blocks saved by sharing (%)':<38}{r['beam_sharing_saving_pct']:>14.2f}"
        f"   (width {r['beam_width']}, {r['beam_requests']} requests, {r['beam_cow_copies']} CoW copies)",
    ]
    return "\n".join(line.rstrip() for line in lines)
