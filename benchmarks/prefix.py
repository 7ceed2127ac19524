"""Prefix caching: processes that share a system prompt, with the cache and without it, in one run.

One model (tinygpt, seeded weights) is shared by handle among `--procs`
processes (attached clients). Each sends the same `--system`-token system
prompt followed by its own `--question`-token question and generates
`--new` tokens (greedy), all at once. After one warm-up request has put the
system prompt's KV in the cache, rounds alternate: every process with the
cache, then every process with `cache=False` (which computes its whole
prompt, as without prefix caching). Per side:
  ttft_ms        median over all requests of all rounds of the time from the
                 call to its first streamed text
  tok_s          generated tokens / wall time of a round (best round)
and
  prefix_ttft_speedup        median TTFT without / with the cache  (target >= 3)
  prefix_throughput_speedup  tokens/s with / without               (target >= 1.5)
  prefix_outputs_match       every text the same both ways
  prefix_hit_rate            prompt tokens taken from the cache / prompt tokens, with the cache
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import runtime
from llmos.userland.aclient import AsyncClient
from llmos.userland.client import Client

from .status import status_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench prefix`."""
    parser.add_argument("--device", default="cpu", help="device (default: cpu)")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--procs", type=int, default=8, help="processes sharing the model (default 8)")
    parser.add_argument("--system", type=int, default=192, help="shared system prompt tokens (default 192)")
    parser.add_argument("--question", type=int, default=16, help="each process's own question tokens (default 16)")
    parser.add_argument("--new", type=int, default=32, help="tokens each generates (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per side (default 3)")


_say = status_line("prefix")


async def _round(clients: list, handles: list[int], prompts: list[list[int]], new: int, cache: bool) -> tuple:
    """All processes at once; (seconds, first-text delays, completions)."""
    start = time.perf_counter()
    firsts: list[float] = []

    async def one(a, handle: int, prompt: list[int]):
        first = []
        done = await a.generate(handle, prompt, max_tokens=new, cache=cache,
                                on_text=lambda piece: first or first.append(time.perf_counter()))  # fmt: skip
        firsts.append((first[0] if first else time.perf_counter()) - start)
        return done

    done = await asyncio.gather(*(one(a, h, p) for a, h, p in zip(clients, handles, prompts)))
    return time.perf_counter() - start, firsts, done


def run(args: argparse.Namespace) -> dict:
    """Boot a kernel, run the rounds, shut down."""
    import torch

    from llmos.drivers.models.checkpoint import save_checkpoint
    from llmos.drivers.models.tinygpt import TinyGPT, TinyGPTConfig

    if min(args.procs, args.system, args.question, args.new, args.rounds) < 1:
        raise SystemExit("--procs, --system, --question, --new and --rounds must be at least 1")
    length = args.system + args.question + args.new
    config = TinyGPTConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, max_len=max(256, length))
    torch.manual_seed(0)
    model = TinyGPT(config).eval()
    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    storage = os.path.join(tmp, "storage")
    os.makedirs(storage)
    save_checkpoint(os.path.join(storage, "bench.safetensors"), model)
    gen = torch.Generator().manual_seed(2)
    system = torch.randint(32, 127, (args.system,), generator=gen).tolist()
    prompts = [system + q for q in torch.randint(32, 127, (args.procs, args.question), generator=gen).tolist()]
    blocks = args.procs * -(-length // 16) + 16
    sides = {True: {"seconds": [], "ttft": [], "texts": None, "cached": 0}, False: {"seconds": [], "ttft": [], "texts": None}}

    kcfg = KernelConfig(name=f"bench-prefix-{os.getpid()}", runtime_dir=tmp, storage_dir=storage, log_level="error")
    with boot.start(kcfg) as kp, Client(kp.address, name="bench-prefix") as c:
        handle = c.model_load(args.device, "tinygpt", checkpoint="bench.safetensors", kv_blocks=blocks).model

        async def rounds() -> None:
            clients = [AsyncClient(kp.address, name=f"bench-proc{i}") for i in range(args.procs)]
            for a in clients:
                await a.__aenter__()
            try:
                handles = [c.share(handle, a.pid) for a in clients]
                _say("warm-up")
                await clients[0].generate(handles[0], system, max_tokens=1)  # the system prompt's blocks, named
                await _round(clients, handles, prompts, args.new, False)  # and the model's code paths, warm
                for r in range(args.rounds):
                    for cache in (True, False):
                        _say(f"round {r + 1}/{args.rounds}: {'with' if cache else 'without'} the cache")
                        seconds, firsts, done = await _round(clients, handles, prompts, args.new, cache)
                        side = sides[cache]
                        side["seconds"].append(seconds)
                        side["ttft"] += firsts
                        side["texts"] = [d.ids for d in done]
                        if cache:
                            side["cached"] += sum(d.cached for d in done)
            finally:
                for a in clients:
                    await a.__aexit__(None, None, None)

        asyncio.run(rounds())
        pool = next(p for d in c.memstat() for p in d.kv_pools if p.pool.startswith("model"))
        c.model_free(handle)
    runtime.remove(kp.dir)
    print("\r" + " " * 80 + "\r", end="", file=sys.stderr, flush=True)
    tokens = args.procs * args.new
    with_, without = sides[True], sides[False]
    ttft = {cache: statistics.median(side["ttft"]) for cache, side in sides.items()}
    tok_s = {cache: tokens / min(side["seconds"]) for cache, side in sides.items()}
    return {
        "config": config.to_dict(),
        "device": args.device,
        "procs": args.procs,
        "prompt_tokens": args.system + args.question,
        "shared_tokens": args.system,
        "new_tokens": args.new,
        "ttft_ms_cache": round(ttft[True] * 1e3, 1),
        "ttft_ms_no_cache": round(ttft[False] * 1e3, 1),
        "tok_s_cache": round(tok_s[True], 1),
        "tok_s_no_cache": round(tok_s[False], 1),
        "prefix_ttft_speedup": round(ttft[False] / ttft[True], 3),
        "prefix_throughput_speedup": round(tok_s[True] / tok_s[False], 3),
        "prefix_outputs_match": with_["texts"] == without["texts"],
        "prefix_hit_rate": round(with_["cached"] / (args.rounds * args.procs * (args.system + args.question)), 3),
        "pool_prefix_hits": pool.prefix_hits,
        "pool_prefix_tokens": pool.prefix_tokens,
    }


def report(r: dict) -> str:
    """The figures as a table."""
    return "\n".join(
        [
            (f"{r['procs']} processes, one shared tinygpt ({r['config']['d_model']} wide, {r['config']['n_layers']} layers) "
             f"on {r['device']}; prompts of {r['prompt_tokens']} tokens, {r['shared_tokens']} of them shared; "
             f"{r['new_tokens']} new tokens each"),
            f"{'':24}{'cache':>12}{'cache=False':>14}",
            f"{'median TTFT (ms)':24}{r['ttft_ms_cache']:>12}{r['ttft_ms_no_cache']:>14}   "
            f"speedup {r['prefix_ttft_speedup']} (target >= 3)",
            f"{'tokens/s':24}{r['tok_s_cache']:>12}{r['tok_s_no_cache']:>14}   "
            f"speedup {r['prefix_throughput_speedup']} (target >= 1.5)",
            f"outputs match: {r['prefix_outputs_match']}; hit rate {r['prefix_hit_rate']} of prompt tokens "
            f"(the pool's count, warm-up and re-feeds included: {r['pool_prefix_hits']} of {r['pool_prefix_tokens']})",
        ]
    )
