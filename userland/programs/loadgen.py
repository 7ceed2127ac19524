"""`llmos run loadgen`: many generating processes on one shared model, and what each of them saw.

Loads the model once (--checkpoint, or with --fresh a fresh one of the size
options), spawns --procs `generate` children with spawn(..., models=[handle])
so that each inherits the handle and passes it as --model, then waits for
them all, collecting the RESULT line each prints. The children start
generating together (generate --together), so their calls share the model's
batched steps. The prompts (--prompts, comma-separated) are dealt out to the
children in turn, each after the --system text, if any: a system prompt
they all share. loadgen first runs the system prompt alone (one token), as
a server warms its cache, so that every child finds its full KV blocks in
the model's prefix cache instead of computing them (`llmos mem` shows the
hit rate while it runs; children that start together would otherwise all
miss, since a block is cached only once a step has filled it); decoding is greedy unless --temperature says otherwise, so
one prompt gives one text in every process. If a spawn is refused, the
children already started are ended before the error is reported.

Reports each request's latency (p50 and p95 of its wall_s, from its generate
call to its last token), the aggregate tokens/s over the span in which the
requests ran, and each process's own tokens/s.
"""

import argparse
import contextlib
import math
import sys

from ..client import Client
from ..errors import LlmosError
from .common import (
    ProgramError,
    add_checkpoint,
    add_model_size,
    add_sampling,
    guarded,
    open_model,
    parse_result,
    parser,
    print_result,
    show_args,
)

PROGRAM = "generate"
PROMPTS = "def ,class ,import ,    return "


def main(argv: list[str]) -> int:
    """Parse the options, print them, and run the load."""
    p = parser("loadgen", __doc__)
    add_checkpoint(p)
    p.add_argument("--fresh", action="store_true", help="a fresh model of the size options instead of --checkpoint")
    add_model_size(p)
    p.add_argument("--max-len", type=int, default=128, help="context of a fresh model")
    p.add_argument("--procs", type=int, default=4, help="generating processes")
    p.add_argument("--prompts", default=PROMPTS, help="comma-separated, dealt out in turn (default: %(default)r)")
    p.add_argument("--system", default="", metavar="TEXT", help="a shared system prompt put before every prompt")
    add_sampling(p, max_tokens=32)
    args = p.parse_args(argv)
    if args.procs < 1 or args.max_tokens < 1:
        p.error("--procs and --max-tokens must be at least 1")
    if not all(args.prompts.split(",")):
        p.error("--prompts may not hold an empty prompt")
    show_args(args)
    return guarded("loadgen", lambda: loadgen(args))


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`th percentile of `values`."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def child_args(args: argparse.Namespace, model: int, prompt: str) -> list[str]:
    """The arguments of one generate child: the inherited handle, its prompt, and the sampling options."""
    return [
        "--model", str(model), f"--prompt={prompt}", "--together", "--max-tokens", str(args.max_tokens),
        "--temperature", str(args.temperature), "--top-k", str(args.top_k), "--top-p", str(args.top_p),
        "--seed", str(args.seed),
    ]  # fmt: skip


def run_children(c: Client, args: argparse.Namespace, model: int) -> list[dict]:
    """Spawn the children on the shared model, wait for each, and return their RESULTs (with pid and prompt)."""
    prompts = args.prompts.split(",")
    children: list[tuple[int, str]] = []
    try:
        for i in range(args.procs):
            prompt = prompts[i % len(prompts)]
            argv = child_args(args, model, args.system + prompt)
            children.append((c.spawn(PROGRAM, argv, models=[model]).pid, prompt))
    except LlmosError:  # a spawn failed: end the children already started, leave nothing running behind the error
        for pid, _ in children:
            with contextlib.suppress(LlmosError):  # it may have ended by itself meanwhile
                c.kill(pid)
            c.wait(pid)
        raise
    results, failed = [], []
    for pid, prompt in children:
        output: list[str] = []
        exited = c.wait(pid, on_output=output.append)
        result = parse_result("".join(output))
        if exited.status != 0 or result is None:
            tail = "".join(output).strip().splitlines()[-1:] or ["no output"]
            failed.append(f"pid {pid}: {exited.reason}: {tail[0]}")
        else:
            results.append({"pid": pid, "prompt": prompt, **result})
    if failed:
        raise ProgramError(f"{len(failed)} of {args.procs} {PROGRAM} processes failed; " + "; ".join(failed))
    return results


def loadgen(args: argparse.Namespace) -> int:
    """Run the children on one model and report latencies and throughput."""
    with Client(name="loadgen") as c, open_model(c, args) as (model, _):
        if args.system:
            c.generate(model, args.system, max_tokens=1, temperature=0.0)
            print(f"warmed the prefix cache with the system prompt ({len(args.system)} characters)")
        results = run_children(c, args, model)
    print(f"{'pid':>5}  {'tokens':>6}  {'wall_s':>7}  {'tok/s':>7}  {'shared':>6}  {'cached':>6}  prompt -> text")
    for r in results:
        row = (f"{r['pid']:>5}  {r['tokens']:>6}  {r['wall_s']:>7.3f}  {r['tokens_per_s']:>7.0f}  {r['shared_steps']:>6}"
               f"  {r['cached']:>6}")  # fmt: skip
        print(f"{row}  {r['prompt']!r} -> {r['text'][:40]!r}")
    walls = [r["wall_s"] for r in results]
    span = max(r["started"] + r["wall_s"] for r in results) - min(r["started"] for r in results)
    tokens = sum(r["tokens"] for r in results)
    aggregate = tokens / span if span > 0 else 0.0
    texts: dict[str, set[str]] = {}
    for r in results:
        texts.setdefault(r["prompt"], set()).add(r["text"])
    identical = all(len(t) == 1 for t in texts.values())
    print(f"latency p50 {percentile(walls, 50):.3f} s, p95 {percentile(walls, 95):.3f} s; "
          f"{tokens} tokens in {span:.3f} s: {aggregate:,.0f} tokens/s together, "
          f"{sum(r['tokens_per_s'] for r in results) / len(results):,.0f} tokens/s per process on average")  # fmt: skip
    print(f"one text per prompt: {'yes' if identical else 'no'}; "
          f"{sum(r['cached'] for r in results)} context tokens came from the prefix cache")  # fmt: skip
    print_result(
        procs=len(results), p50_s=percentile(walls, 50), p95_s=percentile(walls, 95), tokens=tokens, span_s=span,
        tokens_per_s=aggregate, per_proc_tokens_per_s=[r["tokens_per_s"] for r in results], identical=identical,
        results=[{k: r[k] for k in ("pid", "prompt", "text", "tokens", "wall_s", "shared_steps", "cached")} for r in results],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
