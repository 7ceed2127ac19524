"""llmos.testing: hypothesis strategies and a ready property suite for scheduling policies.

`workloads()` and `budgets()` draw scheduler inputs; `PolicyProperties` is a
test class to subclass with your policy (see docs/scheduler.md);
`drive` runs a policy on a workload tick by tick for properties of your own;
`scheduler_machine` builds a hypothesis state machine over a scheduler with
your policy.
"""

from llmos.testing.machine import scheduler_machine
from llmos.testing.strategies import budgets, workloads
from llmos.testing.suite import (
           PolicyProperties,
           Run,
           Skipped,
           Tick,
           drive,
           saturating_stream,
)

__all__ = ["PolicyProperties", "Run", "Skipped", "Tick", "budgets", "drive", "saturating_stream", "scheduler_machine",
           "workloads"]
