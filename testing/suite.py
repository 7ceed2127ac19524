"""A ready property suite for scheduling policies: subclass it in one test file.

    from llmos.testing import PolicyProperties
    from mypkg.sched import MyPolicy

    class TestMyPolicy(PolicyProperties):
        policy = MyPolicy          # any zero-argument callable returning a Policy

pytest then runs, against the scheduler with your policy, on workloads drawn
by hypothesis: every request finishes exactly once; budgets and KV memory
hold on every tick; no tick leaves work idle that could have run; each
preemption victim ranks below the sequence it made room for; a run is
deterministic; switching to your policy mid-run loses nothing; and no
runnable sequence is passed over for more than `max_wait_ticks` consecutive
ticks while a stream of one-token requests keeps the device saturated (the
test that catches starvation: shortest-job-first fails it).

`drive` is the harness the tests share; it is public so that your own
properties can use it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmos.services.scheduler.batching import Batch, Budget, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace, blocks_for
from llmos.services.scheduler.policies.base import Policy
from llmos.services.scheduler.policies.fcfs import FCFS
from llmos.services.scheduler.request import Kind, Request, State
from llmos.services.scheduler.request import Sequence as Seq
from llmos.testing.strategies import budgets, workloads


@dataclass(frozen=True)
class Skipped:
    """A runnable sequence a tick passed over, as it stood when the tick was planned."""

    seq: Seq
    state: State
    computed: int
    decode: bool
    training: bool


@dataclass(frozen=True)
class Tick:
    """What the harness saw of one tick (sequences change later; `passed_over` is a snapshot)."""

    batch: Batch
    runnable: tuple[Seq, ...]  # runnable when the tick was planned
    passed_over: tuple[Skipped, ...]  # runnable, not in the batch
    free_blocks: int  # free device blocks after planning
    finished: tuple[Seq, ...]


@dataclass(frozen=True)
class Run:
    """A whole run: its ticks, every submitted sequence, and the finish order."""

    ticks: list[Tick]
    sequences: list[Seq]
    finished: list[Seq]
    blocks: CountingBlockSpace


def drive(policy: Policy, requests: Sequence[Request], budget: Budget, blocks: int = 64,
          block_size: int = 4, preemption: str = "recompute", swap_blocks: int = 16, dt: float = 0.001,
          max_ticks: int = 5000, switch: tuple[int, Callable[[], Policy]] | None = None,
          stream: Callable[[float], list[Request]] | None = None) -> Run:
    """Run `requests` through a scheduler with `policy`; each tick lasts `dt` virtual seconds.

    `switch=(k, factory)` replaces the policy before tick k. `stream(now)`
    returns extra requests submitted before each tick. Requests whose KV could
    never fit are left out. Stops when all work is done or after `max_ticks`.
    """
    space = CountingBlockSpace(blocks, block_size, swap_blocks if preemption == "swap" else 0)
    sched = Scheduler(policy, space, budget, preemption)
    limit = blocks * block_size
    pending = [r for r in sorted(requests, key=lambda r: (r.arrival, r.rid))
               if r.kind is Kind.TRAINING or r.prompt_len + r.output_len - 1 <= limit]
    nxt, now, k = 0, 0.0, 0
    seqs: list[Seq] = []
    ticks: list[Tick] = []
    finished: list[Seq] = []
    while k < max_ticks:
        k += 1
        if switch is not None and switch[0] == k:
            sched.set_policy(switch[1](), now)
        for r in stream(now) if stream else ():
            seqs.append(sched.submit(r, now))
        while nxt < len(pending) and pending[nxt].arrival <= now:
            seqs.append(sched.submit(pending[nxt], now))
            nxt += 1
        if not len(sched):
            if nxt == len(pending) and stream is None:
                break
            now = pending[nxt].arrival if nxt < len(pending) else now + dt
            continue
        runnable = tuple(sched.sequences())
        batch = sched.tick(now)
        in_batch = {e.seq.rid for e in batch.entries}
        skipped = tuple(Skipped(s, s.state, s.computed, s.is_decode, s.is_training)
                        for s in runnable if s.rid not in in_batch)
        free = space.free()
        now += dt
        done = sched.complete(batch, now)
        finished += done
        ticks.append(Tick(batch, runnable, skipped, free, tuple(done)))
    return Run(ticks, seqs, finished, space)


def saturating_stream(budget: Budget, pid: int = 1000) -> Callable[[float], list[Request]]:
    """A stream of one-token requests, `budget.seqs` of them each tick, all from process `pid`.

    Each needs exactly one tick (its one-token prompt emits its one output
    token), so the stream alone keeps every sequence slot busy. Their ids
    start at 1,000,000.
    """
    rids = itertools.count(1_000_000)

    def stream(now: float) -> list[Request]:
        return [Request(next(rids), pid, now, 1, 1) for _ in range(budget.seqs)]
    return stream


# Each subclass runs the same inherited test methods with its own policy; the
# differing-executors check warns that examples saved for one subclass would be
# replayed for another, which derandomize (no example database) rules out.
FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.differing_executors])


class PolicyProperties:
    """Property tests for the policy `policy`; subclass with a class name starting with Test.

    Set `policy` to a zero-argument factory of the policy under test, and
    `max_wait_ticks` to the longest run of consecutive ticks one or two
    longer requests may be passed over while a saturating stream of
    one-token requests arrives (the default suits starvation-free policies
    on the small workloads used here).
    """

    policy: Callable[[], Policy]
    max_wait_ticks: int = 60

    def make_policy(self) -> Policy:
        """A fresh instance of the policy under test."""
        return type(self).policy()

    @FAST
    @given(workloads(), budgets(), st.sampled_from(["recompute", "swap"]), st.integers(12, 64))
    def test_every_request_finishes_exactly_once(self, requests, budget, preemption, blocks):
        """Nothing submitted is lost, and nothing finishes twice."""
        run = drive(self.make_policy(), requests, budget, blocks=blocks, preemption=preemption)
        finished = [s.rid for s in run.finished]
        assert len(finished) == len(set(finished)), "a request finished twice"
        assert sorted(finished) == sorted(s.rid for s in run.sequences), "a request never finished"
        for seq in run.sequences:
            r = seq.request
            assert seq.generated == r.output_len
            assert seq.computed == (r.prompt_len if r.kind is Kind.TRAINING else r.prompt_len + r.output_len - 1)
        assert run.blocks.free() == run.blocks.total, "blocks leaked"

    @FAST
    @given(workloads(), budgets(), st.sampled_from(["recompute", "swap"]), st.integers(12, 64))
    def test_budgets_and_memory_hold(self, requests, budget, preemption, blocks):
        """Every tick feeds at most the token budget, runs at most the sequence budget, once each."""
        run = drive(self.make_policy(), requests, budget, blocks=blocks, preemption=preemption)
        for t in run.ticks:
            rids = [e.seq.rid for e in t.batch.entries]
            assert len(rids) == len(set(rids)), "a sequence twice in one batch"
            assert len(rids) <= budget.seqs
            assert t.batch.tokens <= budget.tokens
            assert 0 <= t.free_blocks <= run.blocks.total
            assert all(e.fed >= 1 for e in t.batch.entries)

    @FAST
    @given(workloads(), budgets(), st.integers(12, 64))
    def test_work_conserving(self, requests, budget, blocks):
        """A sequence is passed over only when the batch is full, the tokens are spent, KV is short, or it was just preempted."""
        run = drive(self.make_policy(), requests, budget, blocks=blocks)
        for t in run.ticks:
            assert t.batch.entries, "an idle tick with runnable work"
            if len(t.batch) == budget.seqs or t.batch.tokens == budget.tokens:
                continue
            size = run.blocks.block_size
            victims = {p.victim.rid for p in t.batch.preempted}  # not rescheduled in the same tick
            for s in t.passed_over:
                if s.seq.rid in victims:
                    continue
                assert not s.training, f"training step {s.seq.rid} passed over with budget left"
                if s.state is State.SWAPPED:
                    fits = blocks_for(s.computed, size) <= t.free_blocks
                else:
                    fits = t.free_blocks > 0 or s.computed % size != 0
                assert not fits, f"{s} passed over with budget and {t.free_blocks} free blocks left"

    @FAST
    @given(workloads(max_prompt=32), budgets(), st.sampled_from(["recompute", "swap"]))
    def test_victims_rank_below_beneficiaries(self, requests, budget, preemption):
        """Preemption takes blocks only from a sequence ranked below the one that needs them (or for the anchor)."""
        run = drive(self.make_policy(), requests, budget, blocks=12, preemption=preemption)
        for t in run.ticks:
            in_batch = {e.seq.rid for e in t.batch.entries}
            for p in t.batch.preempted:
                assert p.by_anchor or p.victim_rank > p.beneficiary_rank
                assert p.victim.rid not in in_batch

    @FAST
    @given(workloads(), budgets())
    def test_same_input_same_trace(self, requests, budget):
        """Two runs of the same workload schedule the same tokens of the same sequences."""
        def trace(run):
            return [[(e.seq.rid, e.fed, e.start) for e in t.batch.entries] for t in run.ticks]
        assert trace(drive(self.make_policy(), requests, budget)) == trace(drive(self.make_policy(), requests, budget))

    @FAST
    @given(workloads(), budgets(), st.integers(1, 6))
    def test_switching_to_the_policy_keeps_queued_work(self, requests, budget, at):
        """A scheduler switched from FCFS to this policy mid-run still finishes everything once."""
        run = drive(FCFS(), requests, budget, switch=(at, self.make_policy))
        assert sorted(s.rid for s in run.finished) == sorted(s.rid for s in run.sequences)

    @FAST
    @given(workloads(min_size=1, max_size=2, procs=2, max_prompt=40, max_output=6, priorities=1,
                     max_arrival=0.0), budgets(max_tokens=16, max_seqs=4))
    def test_no_starvation_under_a_stream_of_short_requests(self, requests, budget):
        """While one-token requests saturate the device, no longer request waits more than max_wait_ticks."""
        horizon = 3 * self.max_wait_ticks
        run = drive(self.make_policy(), requests, budget, blocks=4096, max_ticks=horizon,
                    stream=saturating_stream(budget))
        longer = {r.rid for r in requests}
        streak: dict[int, int] = {}
        for t in run.ticks:
            served = {e.seq.rid for e in t.batch.entries}
            for seq in t.runnable:
                if seq.rid in longer:
                    streak[seq.rid] = 0 if seq.rid in served else streak.get(seq.rid, 0) + 1
                    assert streak[seq.rid] <= self.max_wait_ticks, (
                        f"{seq} passed over for {streak[seq.rid]} consecutive ticks")
