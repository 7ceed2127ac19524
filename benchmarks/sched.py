"""Scheduler: tick cost at 10k sequences, continuous vs static batching, VTC vs FCFS fairness.

Three measurements, all of the pure scheduler service (no kernel, no sockets):

tick_ms_10k -- for each built-in policy, a scheduler with a sequence budget of
256 and a token budget of 8192 holds 10,000 runnable sequences (100
processes, 32-token prompts, outputs long enough never to finish; KV memory
ample, so nothing is preempted). After 60 warm-up ticks, `--ticks` ticks are
timed with time.perf_counter, each tick being `tick()` (choose the batch)
plus `complete()` (record its progress); every measured batch holds 256
sequences. The figure is the mean milliseconds per tick of the slowest
policy; `tick_ms_10k_by_policy` has each policy's mean.

continuous_vs_static_throughput -- one heavy-tailed workload (`--requests`
requests all arriving at time 0, log-normal prompts of mean 128, Pareto output
lengths of mean 128 capped at 2048) runs through the simulator twice under
FCFS with the same budgets (64 sequences, 4096 tokens), ample KV and the
mocktpu cost model: once with continuous batching, once with static batching
(a batch of 64 runs until all its members finish before the next is formed).
The figure is the ratio of output tokens per simulated second.

vtc_max_gap_tokens, fcfs_max_gap_tokens -- one heavy process sending 8 times
as many requests as each of 3 light ones, arriving faster than the device
serves them (budgets 16 sequences, 512 tokens), run under VTC and under FCFS.
The figure is the simulator's largest service gap (weighted tokens: 1 per
prefill token, 2 per generated token) between two processes over any stretch
in which both were backlogged throughout (see llmos.services.scheduler.metrics).
"""

from __future__ import annotations

import argparse
import time

from llmos.drivers import costmodel
from llmos.services.scheduler.batching import Budget, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace
from llmos.services.scheduler.policies import BUILTIN, FCFS, VTC
from llmos.services.scheduler.request import Request
from llmos.services.scheduler.sim import Simulator, step_shape
from llmos.services.scheduler.workload import generate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench sched`."""
    parser.add_argument("--ticks", type=int, default=200, help="timed ticks per policy (default 200)")
    parser.add_argument("--requests", type=int, default=1000,
                        help="requests of the throughput workload (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")


def tick_ms(policy_cls, ticks: int, runnable: int = 10_000, seqs: int = 256) -> float:
    """Mean ms of tick() + complete() with `runnable` sequences and a `seqs`-sequence batch."""
    sched = Scheduler(policy_cls(), CountingBlockSpace(10_000_000, 16), Budget(8192, seqs))
    for rid in range(runnable):
        sched.submit(Request(rid, rid % 100, 0.0, 32, 100_000, rid % 4), 0.0)
    now = 0.0
    for _ in range(60):
        batch = sched.tick(now)
        now += 0.01
        sched.complete(batch, now)
    elapsed = 0.0
    for _ in range(ticks):
        start = time.perf_counter()
        batch = sched.tick(now)
        sched.complete(batch, now + 0.01)
        elapsed += time.perf_counter() - start
        assert len(batch) == seqs
        now += 0.01
    return elapsed / ticks * 1e3


def _simulate(policy, requests, budget: Budget, static: bool = False) -> dict:
    spec, model = costmodel.device("mocktpu"), costmodel.ModelShape()
    sched = Scheduler(policy, CountingBlockSpace(1_000_000, 16), budget, static=static)
    return Simulator(sched, lambda b: costmodel.step_time(spec, model, **step_shape(b)), requests).run().metrics()


def run(args: argparse.Namespace) -> dict:
    """Measure the figures described in the module docstring."""
    by_policy = {name: round(tick_ms(cls, args.ticks), 4) for name, cls in BUILTIN.items()}
    heavy_tail = generate(args.requests, procs=4, seed=args.seed, rate=0, prompt_mean=128,
                          output_mean=128, max_len=2048)
    budget = Budget(4096, 64)
    continuous = _simulate(FCFS(), heavy_tail, budget)
    static = _simulate(FCFS(), heavy_tail, budget, static=True)
    skewed = generate(400, procs=4, seed=args.seed, rate=20_000, prompt_mean=128, output_mean=64,
                      max_len=1024, weights=[8, 1, 1, 1])
    small = Budget(512, 16)
    vtc = _simulate(VTC(), skewed, small)
    fcfs = _simulate(FCFS(), skewed, small)
    return {
        "tick_ms_10k": max(by_policy.values()),
        "tick_ms_10k_by_policy": by_policy,
        "continuous_vs_static_throughput": round(continuous["throughput_tok_s"] / static["throughput_tok_s"], 3),
        "continuous_tok_s": round(continuous["throughput_tok_s"]),
        "static_tok_s": round(static["throughput_tok_s"]),
        "vtc_max_gap_tokens": vtc["max_gap_tokens"],
        "fcfs_max_gap_tokens": fcfs["max_gap_tokens"],
        "vtc_gap_bound_tokens": VTC().gap_bound(small.tokens, small.seqs),
        "vtc_jain": round(vtc["jain"], 4),
        "fcfs_jain": round(fcfs["jain"], 4),
    }


def report(result: dict) -> str:
    """The figures as a table."""
    lines = ["llmos bench sched (pure scheduler service; simulated time on the mocktpu cost model)",
             f"  tick at 10k runnable, 256-seq batch: {result['tick_ms_10k']:.3f} ms (slowest policy; target <= 1.0)"]
    lines += [f"    {name:9} {ms:.3f} ms" for name, ms in result["tick_ms_10k_by_policy"].items()]
    lines += [
        (f"  continuous vs static batching throughput: {result['continuous_vs_static_throughput']:.2f}x "
         f"({result['continuous_tok_s']} vs {result['static_tok_s']} tokens/s; target >= 3)"),
        (f"  largest service gap, 1 heavy + 3 light processes: VTC {result['vtc_max_gap_tokens']:g} "
         f"(bound {result['vtc_gap_bound_tokens']:g}), FCFS {result['fcfs_max_gap_tokens']:g} weighted tokens"),
        f"  Jain's index of contended service: VTC {result['vtc_jain']}, FCFS {result['fcfs_jain']}",
    ]
    return "\n".join(lines)
