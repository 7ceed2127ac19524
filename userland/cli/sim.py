"""`llmos sim`: run a workload through a scheduler policy on a simulated device, in virtual time.

In the manner of the OSTEP homework simulators: the run prints its arguments,
then a trace of every tick, then either asks you to compute the results (the
default) or prints them (`-c`). Nothing is booted: the scheduler service runs
in this process on the memory service's paged KV cache, and each tick lasts what
the device cost model (llmos.drivers.costmodel) says the batch would take.
Simulated time is labelled as such.

With --shared-prefix N each prompt starts with one of --prefixes system prompts
of N tokens, and the run models the kernel's prefix cache: prompts find the
named blocks of earlier ones in the same KV cache, and the trace shows the hits
and the evictions of cached blocks.

With --static the scheduler batches the old way, for comparison: a batch is
formed only when the previous one has entirely finished. With --preempt swap
the copies to and from host memory take the cost model's host-link time,
which the trace shows. With -c, besides the answers, a table gives every
tick's service per process, the running totals, and (under a policy that
keeps counters, as VTC does) the policy's counters after the tick.

Simulators of the other subsystems, in the same manner, are subcommands:
`llmos sim paging`, `llmos sim prefix`, `llmos sim admit`, `llmos sim lifecycle`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from llmos.drivers import costmodel
from llmos.kernel import plugins
from llmos.services.scheduler import sim as simulator
from llmos.services.scheduler import workload
from llmos.services.scheduler.batching import Budget, Preemption, Scheduler
from llmos.services.memory.kv import KVCache
from llmos.services.scheduler.blocks import PagedBlockSpace
from llmos.services.scheduler.policies import Policy

QUESTIONS = """\
Compute, from the trace above (one tick lasts the simulated step time shown):
  1. the time to first token (TTFT) of each request: when its first output
     token is emitted, minus its arrival;
  2. the completion time of each request: when its last token is emitted,
     minus its arrival;
  3. the throughput: output tokens per second of simulated time;
  4. the service of each process: 1 per prompt (or recomputed, or training)
     token fed, plus 2 per token generated;
  5. Jain's fairness index, (sum x)^2 / (n * sum x^2), of the contended
     service: what each process got in the ticks at whose end it and another
     process both had a request waiting unserved;
  6. the largest service gap: over any stretch of ticks at whose every end two
     processes both had a request waiting unserved, the largest difference of
     the service they got in it.
Then run again with -c to check your answers."""

PREFIX_QUESTION = """\
  7. the prefix cache: how many tokens of each request were found cached
     (whole blocks its context starts with, written in an earlier tick; its
     last prompt token is always fed), and the hit rate, as `llmos mem` gives
     it: tokens found / tokens looked up. A request looks up its whole
     context (its prompt; prompt and output after a recompute) whenever a
     tick picks it while it holds no blocks; a lookup after which the tick
     had no tokens left for it is replaced, in the counts, by its next one."""


def add_parser(sub) -> None:
    """Add the `llmos sim` parser."""
    p = sub.add_parser(
        "sim", help="simulate a scheduler policy on a workload, in virtual time",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: `llmos sim --policy vtc -s 1`, then the same with -c. "
        "--policy also takes module:Class for a policy of your own.")
    p.add_argument("--policy", default="fcfs", help="fcfs, rr, priority, mlfq, vtc, or module:Class (default fcfs)")
    p.add_argument("-s", "--seed", type=int, default=0, help="seed of the generated workload (default 0)")
    p.add_argument("-n", "--requests", type=int, default=8, help="requests to generate (default 8)")
    p.add_argument("--procs", type=int, default=2, help="processes sending them (default 2)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="arrivals per simulated second; 0 = all at once (default 1000)")
    p.add_argument("--prompt-mean", type=int, default=24, help="mean prompt length in tokens (default 24)")
    p.add_argument("--output-mean", type=int, default=6, help="mean output length in tokens (default 6)")
    p.add_argument("--priorities", type=int, default=1, help="priority levels drawn from (default 1)")
    p.add_argument("--shared-prefix", type=int, default=0, metavar="N",
                   help="tokens of a system prompt each prompt starts with, for the prefix cache (default 0: none)")
    p.add_argument("--prefixes", type=int, default=1, metavar="K",
                   help="distinct system prompts, each request draws one (default 1; needs --shared-prefix)")
    p.add_argument("--workload", metavar="FILE", help="read requests from a JSON-lines file instead")
    p.add_argument("--device", default="mocktpu", choices=sorted(costmodel.PRESETS), help="cost model (default mocktpu)")
    p.add_argument("--token-budget", type=int, default=32, help="tokens fed per tick (default 32)")
    p.add_argument("--max-seqs", type=int, default=2, help="sequences per tick (default 2)")
    p.add_argument("--blocks", type=int, default=64, help="KV blocks on the device (default 64)")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block (default 16)")
    p.add_argument("--preempt", default="recompute", choices=[m.value for m in Preemption],
                   help="how a victim gives up its KV (default recompute)")
    p.add_argument("--swap-blocks", type=int, default=64, help="host blocks for --preempt swap (default 64)")
    p.add_argument("--static", action="store_true",
                   help="static batching: a new batch only when the whole previous one finished")
    p.add_argument("-c", "--compute", action="store_true", help="print the answers")
    p.add_argument("--json", action="store_true", help="print the arguments and metrics as one JSON object")
    p.add_argument("--trace", metavar="FILE", help="also write the run as Chrome/Perfetto trace-event JSON")
    p.add_argument("--plot", metavar="FILE", help="also write a PNG: who ran when, and KV tokens held")
    p.add_argument("-q", "--quiet", action="store_true", help="no trace")
    p.add_argument("--trace-limit", type=int, default=60, help="ticks of trace to print (default 60)")
    p.set_defaults(func=run)
    labs = p.add_subparsers(dest="lab", metavar="SUBSYSTEM", required=False,
                            help="simulate another subsystem instead: " + ", ".join(LABS))
    for name, (module, help_text, options) in LABS.items():
        q = labs.add_parser(name, help=help_text, description=importlib.import_module(module).__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        q.add_argument("-s", "--seed", type=int, default=0, help="seed of the exercise (default 0)")
        for flag, kind, default, text in options:
            q.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
        q.add_argument("-c", "--compute", action="store_true", help="print each step's result and the answers")
        q.set_defaults(func=run_lab, lab_module=module)


LABS = {  # subcommand -> (module, help, options: flag, type, default, help)
    "paging": ("llmos.userland.labsim.paging", "block tables, fork and copy-on-write",
               [("--blocks", int, 12, "blocks in the pool"), ("--block-size", int, 4, "tokens per block"),
                ("--ops", int, 6, "operations after the first allocation"),
                ("--probes", int, 3, "tokens to locate at the end")]),
    "prefix": ("llmos.userland.labsim.prefix", "prefix-cache hits and LRU eviction",
               [("--blocks", int, 10, "blocks in the pool"), ("--block-size", int, 4, "tokens per block"),
                ("--requests", int, 6, "prompts"), ("--system", int, 8, "tokens of each system prompt"),
                ("--prompts", int, 2, "distinct system prompts"),
                ("--frees", float, 0.5, "chance that a request is freed after each allocation")]),
    "admit": ("llmos.userland.labsim.admit", "admission: OK / LATER / NEVER under a watermark and quotas",
              [("--blocks", int, 16, "blocks in the pool"), ("--block-size", int, 4, "tokens per block"),
               ("--requests", int, 8, "prompts"), ("--procs", int, 2, "processes sending them"),
               ("--watermark", float, 0.125, "fraction of the pool kept free for growth"),
               ("--quota", int, 6, "p1's quota in blocks")]),
    "lifecycle": ("llmos.userland.labsim.lifecycle", "processes: what each holds, and what comes back when it ends",
                  [("--children", int, 3, "children spawned"),
                   ("--calls", int, 7, "allocs, shares and frees among them"),
                   ("--capacity", int, 4096, "cpu0's memory in KiB"),
                   ("--blocks", int, 12, "blocks in the KV pool"), ("--block-size", int, 4, "tokens per block")]),
}


def run_lab(args: argparse.Namespace) -> int:
    """Run one subsystem's simulator (`llmos sim paging|prefix|admit|lifecycle`): its steps, then questions or
    answers."""
    from llmos.userland.labsim import frame

    module = importlib.import_module(args.lab_module)
    options = {k: v for k, v in vars(args).items()
               if k not in ("func", "command", "lab", "lab_module", "compute") and k in module.simulate.__code__.co_varnames}
    try:
        exercise = module.simulate(**options)
    except ValueError as exc:
        print(f"llmos sim {args.lab}: {exc}", file=sys.stderr)
        return 2
    print(frame.render(exercise, args.compute))
    return 0


def load_policy(name: str) -> type[Policy]:
    """The policy class called `name`: one the plugins provide (as the kernel's) or `module:Class`.

    LookupError, with a one-line message, when there is none.
    """
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise LookupError(f"cannot load policy {name!r}: {exc}") from None
        if not isinstance(cls, type):
            raise LookupError(f"{name!r} is not a class")
        return cls
    policies = plugins.policies(plugins.plugin_manager())
    if name not in policies:
        raise LookupError(f"no policy {name!r}; choose from {', '.join(sorted(policies))} or module:Class")
    return policies[name]


def run(args: argparse.Namespace) -> int:
    """Simulate, print the arguments, the trace, and the questions or the answers."""
    try:
        policy = load_policy(args.policy)
    except LookupError as exc:
        print(f"llmos sim: {exc}", file=sys.stderr)
        return 2
    if args.shared_prefix < 0 or args.prefixes < 1:
        print("llmos sim: need --shared-prefix >= 0 and --prefixes >= 1", file=sys.stderr)
        return 2
    try:
        requests, prefixes, result = simulate(args, policy)
    except ValueError as exc:  # a request whose KV can never fit in --blocks
        print(f"llmos sim: {exc} (raise --blocks or --block-size)", file=sys.stderr)
        return 2
    if args.trace or args.plot:
        write_trace(result, f"{args.device}0", args.trace, args.plot)
    hidden = ("func", "command", "json", "compute", "quiet", "trace_limit", "trace", "plot", "lab")
    shown = {k: v for k, v in vars(args).items() if k not in hidden}
    if not args.static:
        shown.pop("static")
    if args.shared_prefix <= 0:
        for key in ("shared_prefix", "prefixes"):
            shown.pop(key)
    if args.workload:
        for key in ("seed", "requests", "procs", "rate", "prompt_mean", "output_mean", "priorities"):
            if key != "seed" or prefixes is None:  # the seed draws each request's system prompt
                shown.pop(key)
    if args.json:
        print(json.dumps({"args": shown, "metrics": result.metrics()}))
        return 0
    for key, value in shown.items():
        print(f"ARG {key} {value}")
    print()
    print(format_requests(requests, prefixes))
    if not args.quiet:
        print()
        print(format_trace(result, args.trace_limit))
    print()
    if args.compute:
        print(format_answers(result))
    else:
        print(QUESTIONS if prefixes is None else QUESTIONS.replace("\nThen run", f"\n{PREFIX_QUESTION}\nThen run"))
    return 0


def simulate(args: argparse.Namespace, policy: type[Policy]):
    """Run the scheduler simulation `args` describe: (requests, shared prefixes or None, SimResult).

    ValueError when a request's KV can never fit in --blocks.
    """
    if args.workload:
        requests = workload.load(args.workload)
    else:
        requests = workload.generate(args.requests, procs=args.procs, seed=args.seed, rate=args.rate,
                                     prompt_mean=args.prompt_mean, output_mean=args.output_mean,
                                     max_len=max(1, args.blocks * args.block_size // 2),
                                     priorities=args.priorities)
    prefixes = None
    if args.shared_prefix > 0:
        requests, prefixes = workload.share_prefix(requests, args.shared_prefix, args.prefixes, args.seed)
    spec = costmodel.device(args.device)
    model = costmodel.ModelShape()
    # the memory service's paged KV cache holds the sequences' blocks, as in the kernel
    owners = {r.rid: r.pid for r in requests}
    kv = KVCache(args.blocks, args.block_size, host_blocks=args.swap_blocks if args.preempt == "swap" else 0, watermark=0.0)
    blocks = PagedBlockSpace(kv, owners.__getitem__)
    scheduler = Scheduler(policy(), blocks, Budget(args.token_budget, args.max_seqs),
                          args.preempt, static=args.static)
    result = simulator.Simulator(
        scheduler, lambda b: costmodel.step_time(spec, model, **simulator.step_shape(b)), requests,
        prefixes=prefixes, swap_time=lambda moved: costmodel.swap_time(spec, model, moved * args.block_size)).run()
    return requests, prefixes, result


def format_requests(requests, prefixes: workload.SharedPrefixes | None = None) -> str:
    """The workload as a table; with `prefixes`, each request's system prompt too."""
    lines = [f"Workload: {len(requests)} requests (times in simulated ms)"]
    if prefixes is None:
        lines.append("  id  pid  arrival  prompt  output  prio  kind")
    else:
        lines.append(f"Each prompt starts with the {prefixes.length} tokens of system prompt sK "
                     f"(K < {prefixes.count}); prompt counts them.")
        lines.append("  id  pid  arrival  prompt  output  prio  kind       system")
    for r in requests:
        lines.append(f"  r{r.rid:<3} p{r.pid:<3} {r.arrival * 1e3:7.3f}  {r.prompt_len:6}  "
                     f"{r.output_len:6}  {r.priority:4}  {r.kind.value}")
        if prefixes is not None:
            k = prefixes.prefix_of.get(r.rid)
            lines[-1] = f"{lines[-1]:<52}  " + ("-" if k is None else f"s{k}")
    return "\n".join(lines)


def _served(s: simulator.Served) -> str:
    if s.training:
        return f"r{s.rid}:train{s.fed}"
    if s.decode:
        return f"r{s.rid}:decode"
    return f"r{s.rid}:prefill{s.fed}[{s.start}:{s.start + s.fed}]" + ("+tok" if s.emitted else "")


def format_trace(result: simulator.SimResult, limit: int) -> str:
    """One line per tick: when it ran, what each sequence did, and what happened around it."""
    lines = ["Trace (simulated ms; prefillN[a:b] feeds prompt positions a..b-1, +tok emits a token;",
             "       decode feeds one token and emits one; waiting = processes with a request left unserved)"]
    if result.lookup_tokens is not None:
        lines[-1] = lines[-1][:-1] + ";"
        lines.append("       hit rN T tokens: the first T tokens of rN's context were in the prefix cache, so its")
        lines.append("       prefill starts at T; evict B blocks: cached blocks were taken for new content)")
    for t in result.ticks[:limit]:
        events = []
        if t.arrived:
            events.append("arrive " + " ".join(f"r{r}" for r in t.arrived))
        events += [f"hit r{rid} {tokens} tokens" for rid, tokens in t.hits]
        if t.evicted:
            events.append(f"evict {t.evicted} block" + ("s" if t.evicted > 1 else ""))
        events += [f"preempt r{v} for r{b} ({mode})" for v, b, mode in t.preempted]
        if t.swapped_in:
            events.append("swap-in " + " ".join(f"r{r}" for r in t.swapped_in))
        if t.swapped_blocks:
            plural = "s" if t.swapped_blocks > 1 else ""
            events.append(f"{t.swapped_blocks} block{plural} over the host link: +{t.swap_s * 1e3:.3f} ms")
        if t.finished:
            events.append("done " + " ".join(f"r{r}" for r in t.finished))
        waiting = " ".join(f"p{p}" for p in sorted(t.backlogged)) or "-"
        lines.append(f"tick {t.tick:3} {t.start * 1e3:8.3f}-{t.end * 1e3:8.3f}  "
                     f"{' '.join(_served(s) for s in t.served)}   waiting: {waiting}"
                     + (f"   [{'; '.join(events)}]" if events else ""))
    if len(result.ticks) > limit:
        lines.append(f"... {len(result.ticks) - limit} more ticks (--trace-limit)")
    return "\n".join(lines)


def format_answers(result: simulator.SimResult) -> str:
    """The answers to the questions, computed from the run."""
    m = result.metrics()
    prefix = result.lookup_tokens is not None
    lines = ["Answers (simulated ms)", "  id  pid     TTFT  completion  preemptions" + ("  cached" if prefix else "")]
    for r in m["requests"]:
        ttft = "      -" if r["ttft"] is None else f"{r['ttft'] * 1e3:8.3f}"
        lines.append(f"  r{r['id']:<3} p{r['pid']:<3} {ttft}  {r['completion'] * 1e3:10.3f}  {r['preemptions']:11}"
                     + (f"  {r['cached']:6}" if prefix else ""))
    lines.append(f"Throughput: {m['output_tokens']} output tokens in {m['makespan_s'] * 1e3:.3f} ms = "
                 f"{m['throughput_tok_s']:.0f} tokens/s")
    lines.append("Service (1 per token fed as prefill, 2 per token generated): "
                 + ", ".join(f"p{pid}={s:g}" for pid, s in m["service"].items()))
    lines.append("Contended service (in ticks ending with it and another process waiting): "
                 + (", ".join(f"p{pid}={s:g}" for pid, s in m["contended_service"].items()) or "none"))
    lines.append(f"Jain's fairness index of the contended service: {m['jain']:.3f}")
    pair = m["max_gap_pids"]
    between = f" (between p{pair[0]} and p{pair[1]})" if pair else " (no two processes were ever waiting together)"
    lines.append(f"Largest service gap between backlogged processes: {m['max_gap_tokens']:g}{between}")
    if m["preemptions"]:
        lines.append(f"Preemptions: {m['preemptions']}; blocks copied over the host link: {m['swapped_blocks']}, "
                     f"taking {m['swap_s'] * 1e3:.3f} ms in all")
    if prefix:
        lines.append(f"Prefix cache: {m['prefix_hit_tokens']} of {m['prefix_lookup_tokens']} tokens looked up were "
                     f"cached, a hit rate of {m['prefix_hit_rate']:.3f}; {m['evictions']} cached blocks evicted")
    lines.append("")
    lines.append(format_ticks(result))
    return "\n".join(lines)


def format_ticks(result: simulator.SimResult) -> str:
    """Step by step: each tick's service per process, the totals so far, and the policy's counters if it keeps any."""
    pids = sorted({seq.pid for seq in result.sequences})
    counted = any(t.counters is not None for t in result.ticks)
    head = "Per tick: service in the tick | served so far"
    if counted:
        head += " | the policy's counters after the tick (lowest runs first; a process that gets new work " \
                "while not backlogged is lifted)"
    lines = [head]
    total = dict.fromkeys(pids, 0.0)
    for t in result.ticks:
        for pid in pids:
            total[pid] += t.service.get(pid, 0.0)
        row = (f"  tick {t.tick:3}  " + " ".join(f"p{p}+{t.service.get(p, 0.0):<4g}" for p in pids)
               + " | " + " ".join(f"p{p}={total[p]:<5g}" for p in pids))
        if t.counters is not None:
            row += " | " + " ".join(f"p{p}={t.counters[p]:<5g}" for p in pids if p in t.counters)
        lines.append(row)
    return "\n".join(lines)


def write_trace(result, device: str, trace: str | None, plot: str | None) -> None:
    """Write the run as a Perfetto trace and/or a PNG, like `llmos trace` does for a kernel."""
    from llmos.userland.trace import from_sim, write_chrome

    timeline = from_sim(result, device)
    if trace:
        write_chrome(timeline, trace)
    if plot:
        from llmos.userland.trace.plot import plot as draw

        draw(timeline, plot)
