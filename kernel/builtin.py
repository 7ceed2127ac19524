"""The kernel's built-in service plugin: tensor memory accounting, policy-driven device queues,
and the choice of device for `auto`.

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


@hookimpl(trylast=True)
def llmos_pick_device(devices: list) -> str | None:
    """Real accelerators first (by peak compute), then the CPU; simulated devices only if nothing else."""
    if not devices:
        return None

    def rank(d) -> tuple:
        return (d.simulated, d.host_visible, -d.peak_flops, d.name)

    return min(devices, key=rank).name
