"""Scheduling policies: the built-in ones, and the base classes for writing more.

`BUILTIN` maps each built-in policy's name to its class; the scheduler plugin
returns it from the `llmos_scheduler_policies` hook.
"""

from llmos.services.scheduler.policies.base import HeapPolicy, Policy
from llmos.services.scheduler.policies.fcfs import FCFS
from llmos.services.scheduler.policies.mlfq import MLFQ
from llmos.services.scheduler.policies.priority import PriorityAging
from llmos.services.scheduler.policies.rr import RoundRobin
from llmos.services.scheduler.policies.vtc import VTC

BUILTIN: dict[str, type[Policy]] = {cls.name: cls for cls in (FCFS, RoundRobin, PriorityAging, MLFQ, VTC)}

__all__ = ["BUILTIN", "FCFS", "MLFQ", "VTC", "HeapPolicy", "Policy", "PriorityAging", "RoundRobin"]
