"""Grader of assignment 2: `assignments.stride.Stride` passes the policy property kit and shares by tickets."""

import pytest

from llmos.services.scheduler.batching import Budget, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace
from llmos.services.scheduler.request import Request
from llmos.testing import PolicyProperties

stride = pytest.importorskip("assignments.stride", reason="assignments/stride.py is missing: restore it from git")


def test_a_lone_request_runs():
    """The first thing to do: with one request, the policy offers it and the scheduler runs it to the end."""
    sched = Scheduler(stride.Stride(), CountingBlockSpace(16, 4), Budget(16, 2))
    sched.submit(Request(0, 1, 0.0, 5, 3), 0.0)
    for tick in range(10):
        batch = sched.tick(tick)
        if sched.complete(batch, tick + 1):
            return
    pytest.fail("a lone request of 5 + 3 tokens did not finish in 10 ticks")


def test_service_follows_the_tickets():
    """Two processes that always have work, with 3 and 1 tickets, are served about 3 : 1."""
    policy = stride.Stride({1: 3, 2: 1})
    sched = Scheduler(policy, CountingBlockSpace(4096, 16), Budget(8, 2))
    served = {1: 0, 2: 0}
    rid = 0
    for pid in (1, 2):
        for _ in range(100):  # more than 60 ticks can serve: both stay busy throughout
            sched.submit(Request(rid, pid, 0.0, 8, 1), 0.0)
            rid += 1
    for tick in range(60):
        batch = sched.tick(float(tick))
        for e in batch.entries:
            served[e.seq.pid] += e.fed
        sched.complete(batch, tick + 1.0)
    ratio = served[1] / max(served[2], 1)
    assert 2.5 <= ratio <= 3.5, f"tokens fed: p1 {served[1]}, p2 {served[2]} (ratio {ratio:.2f}, want about 3)"


class TestStrideProperties(PolicyProperties):
    """The property kit of docs/scheduler.md, on Stride."""

    policy = stride.Stride

    @pytest.fixture(autouse=True)
    def written(self):
        """Fail at once, with the reason, while the policy's methods are not written (not after a long search)."""
        try:
            test_a_lone_request_runs()
        except NotImplementedError as exc:
            pytest.fail(str(exc))
