"""The kernel's built-in service plugin: tensor memory accounting and policy-driven device queues.

Other plugins replace either by answering the same firstresult hook first
(pluggy calls later-registered plugins first).
"""

from llmos.services.memory.tensor import TensorMemory
from llmos.services.scheduler.devqueue import PolicyQueue
from llmos.services.scheduler.policies.base import Policy
from llmos.syscalls.plugin import hookimpl


@hookimpl
def llmos_memory_service(device: str, capacity: int, default_quota: int | None) -> TensorMemory:
    """Per-device capacity and per-process quota accounting."""
    return TensorMemory(capacity, default_quota)


@hookimpl
def llmos_device_queue(device: str, policy: Policy) -> PolicyQueue:
    """Per-process FIFOs; the scheduling policy picks the process."""
    return PolicyQueue(policy)
