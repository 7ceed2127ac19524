"""Stateful property tests: random submit / tick / cancel / switch sequences for every built-in policy."""

from hypothesis import settings
from llmos.services.scheduler.policies import FCFS, MLFQ, VTC, PriorityAging, RoundRobin
from llmos.testing import scheduler_machine

SETTINGS = settings(max_examples=25, stateful_step_count=30, deadline=None, derandomize=True)
OTHERS = (FCFS, RoundRobin, VTC)

TestFCFSMachine = scheduler_machine(FCFS, OTHERS).TestCase
TestRoundRobinMachine = scheduler_machine(RoundRobin, OTHERS).TestCase
TestPriorityMachine = scheduler_machine(PriorityAging, OTHERS, preemption="swap").TestCase
TestMLFQMachine = scheduler_machine(MLFQ, OTHERS).TestCase
TestVTCMachine = scheduler_machine(VTC, OTHERS, preemption="swap").TestCase

for case in (TestFCFSMachine, TestRoundRobinMachine, TestPriorityMachine, TestMLFQMachine, TestVTCMachine):
    case.settings = SETTINGS
