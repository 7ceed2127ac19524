"""The kernel's built-in service plugin: tensor memory accounting and FIFO device queues.

Other plugins replace either by answering the same firstresult hook first
(pluggy calls later-registered plugins first).
"""

from llmos.services.memory.tensor import TensorMemory
from llmos.services.scheduler.fifo import DeviceQueue
from llmos.syscalls.plugin import hookimpl


@hookimpl
def llmos_memory_service(device: str, capacity: int, default_quota: int | None) -> TensorMemory:
    """Per-device capacity and per-process quota accounting."""
    return TensorMemory(capacity, default_quota)


@hookimpl
def llmos_device_queue(device: str) -> DeviceQueue:
    """First come, first served."""
    return DeviceQueue()
