"""A hypothesis state machine over one scheduler: submit, tick, cancel and switch policies at random.

    from llmos.testing import scheduler_machine
    TestMyPolicyMachine = scheduler_machine(MyPolicy).TestCase

After every step it checks that the scheduler's runnable set is exactly what
was submitted and neither finished nor cancelled, that the device blocks in
use are exactly those held by runnable sequences, that each tick keeps its
budgets and only preempts sequences ranked below the one they make room for,
and that no request finishes twice. At the end it runs the scheduler dry and
checks that every request that was not cancelled finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from llmos.services.scheduler.batching import Budget, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace
from llmos.services.scheduler.policies.base import Policy
from llmos.services.scheduler.policies.fcfs import FCFS
from llmos.services.scheduler.request import Kind, Request, State


def scheduler_machine(policy: Callable[[], Policy], others: Sequence[Callable[[], Policy]] = (FCFS,),
                      budget: Budget | None = None, blocks: int = 16, block_size: int = 4,
                      preemption: str = "recompute") -> type[RuleBasedStateMachine]:
    """A state machine class driving a scheduler that starts with `policy()`.

    The `switch` rule moves the scheduler to one of `policy` and `others`.
    The budget defaults to 12 tokens and 3 sequences.
    """
    factories = [policy, *others]
    budget = budget or Budget(12, 3)

    class SchedulerMachine(RuleBasedStateMachine):
        """Random submit / tick / cancel / switch sequences against one scheduler."""

        def __init__(self) -> None:
            super().__init__()
            self.space = CountingBlockSpace(blocks, block_size, host_total=blocks // 2)
            self.sched = Scheduler(policy(), self.space, budget, preemption)
            self.now = 0.0
            self.rids = 0
            self.live: dict[int, Request] = {}
            self.finished: set[int] = set()

        @rule(pid=st.integers(1, 3), prompt=st.integers(1, 24), output=st.integers(0, 6),
              priority=st.integers(0, 2))
        def submit(self, pid: int, prompt: int, output: int, priority: int) -> None:
            """Submit a request now (output 0 makes it a training step)."""
            kind = Kind.TRAINING if output == 0 else Kind.INFERENCE
            if kind is Kind.INFERENCE and prompt + output - 1 > blocks * block_size:
                return
            request = Request(self.rids, pid, self.now, prompt, output, priority, kind)
            self.rids += 1
            self.sched.submit(request, self.now)
            self.live[request.rid] = request

        @rule()
        def tick(self) -> None:
            """Run one tick and check it."""
            self._tick()

        @precondition(lambda self: self.live)
        @rule(data=st.data())
        def cancel(self, data) -> None:
            """Cancel a runnable request, as when its process dies."""
            rid = data.draw(st.sampled_from(sorted(self.live)))
            assert self.sched.cancel(rid) is not None
            del self.live[rid]

        @rule(index=st.integers(0, len(factories) - 1))
        def switch(self, index: int) -> None:
            """Switch the scheduler to another policy."""
            self.sched.set_policy(factories[index](), self.now)

        def _tick(self) -> None:
            if not len(self.sched):
                return
            batch = self.sched.tick(self.now)
            assert batch.entries, "idle tick with runnable work"
            assert len(batch) <= budget.seqs and batch.tokens <= budget.tokens
            assert len({e.seq.rid for e in batch.entries}) == len(batch)
            for p in batch.preempted:
                assert p.by_anchor or p.victim_rank > p.beneficiary_rank
            self.now += 0.001
            for seq in self.sched.complete(batch, self.now):
                assert seq.rid not in self.finished, f"request {seq.rid} finished twice"
                self.finished.add(seq.rid)
                del self.live[seq.rid]

        @invariant()
        def runnable_is_what_was_submitted_and_not_done(self) -> None:
            """No request is lost or invented."""
            assert {s.rid for s in self.sched.sequences()} == set(self.live)

        @invariant()
        def blocks_are_held_by_runnable_sequences(self) -> None:
            """Device blocks in use are exactly those held by runnable sequences, each big enough."""
            held = 0
            for seq in self.sched.sequences():
                n = self.space.held(seq.rid)
                held += n
                if seq.state is State.RUNNING and not seq.is_training:
                    assert seq.computed <= n * block_size
                elif seq.state is not State.RUNNING:
                    assert n == 0
            assert held == self.space.total - self.space.free()

        def teardown(self) -> None:
            """Run dry: every request not cancelled finishes."""
            for _ in range(10_000):
                if not len(self.sched):
                    break
                self._tick()
            assert not self.live, f"requests never finished: {sorted(self.live)}"

    SchedulerMachine.__name__ = f"SchedulerMachine_{getattr(policy, '__name__', 'policy')}"
    return SchedulerMachine
