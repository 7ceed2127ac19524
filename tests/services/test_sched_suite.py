"""The ready property suite of llmos.testing, run against every built-in policy."""

from llmos.services.scheduler.policies import FCFS, MLFQ, VTC, PriorityAging, RoundRobin
from llmos.testing import PolicyProperties


class TestFCFS(PolicyProperties):
    policy = FCFS


class TestRoundRobin(PolicyProperties):
    policy = RoundRobin


class TestPriorityAging(PolicyProperties):
    policy = PriorityAging


class TestMLFQ(PolicyProperties):
    # Starvation under a saturating stream is bounded by the boost period:
    # 0.02 s is 20 ticks of the harness.
    @staticmethod
    def policy():
        return MLFQ(boost=0.02)


class TestVTC(PolicyProperties):
    policy = VTC
