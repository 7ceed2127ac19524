"""Generation speed of the paged step against the contiguous-KV torch baseline, in one process.

`python -m llmos.drivers.models.bench [--json]` times greedy generation of a
small tinygpt (d_model 128, 4 layers, 4 heads by default) for one sequence and
for a batch of sequences, with `greedy_paged` (the paged `TinyGPT.step`) and
with `greedy_contiguous` (plain torch, contiguous KV cache), and reports
generated tokens per second and their ratio. Timings are measured, never
asserted; the figures belong in docs/models.md.
"""

import argparse
import json
import time
from functools import partial

import torch

from .reference import greedy_contiguous, greedy_paged
from .tinygpt import TinyGPT, TinyGPTConfig


def _best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` timed calls of `fn` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(
    config: TinyGPTConfig, batch_sizes=(1, 8), prompt_len: int = 32, max_new: int = 128, block_size: int = 16, repeats: int = 3
) -> list[dict]:
    """Tokens/s of paged and contiguous greedy generation for each batch size; one dict per batch size."""
    torch.manual_seed(0)
    model = TinyGPT(config).eval()
    rows = []
    for B in batch_sizes:
        prompts = torch.randint(0, 256, (B, prompt_len))
        paged = _best_seconds(partial(greedy_paged, model, prompts.tolist(), max_new, block_size), repeats)
        plain = _best_seconds(partial(greedy_contiguous, model, prompts, max_new), repeats)
        tokens = B * max_new
        rows.append(
            {
                "batch": B,
                "tokens": tokens,
                "paged_tok_s": round(tokens / paged, 1),
                "contiguous_tok_s": round(tokens / plain, 1),
                "paged_vs_contiguous": round(plain / paged, 3),
            }
        )
    return rows


def main(argv=None) -> None:
    """Command line: print the measured figures as a table or JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TinyGPTConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, max_len=args.prompt + args.new)
    rows = measure(config, prompt_len=args.prompt, max_new=args.new)
    if args.json:
        print(json.dumps({"config": config.to_dict(), "threads": torch.get_num_threads(), "rows": rows}))
    else:
        for r in rows:
            print(r)


if __name__ == "__main__":
    main()
