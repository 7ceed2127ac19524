"""The CPU driver plugin: one device, `cpu0`, backed by shared host memory.

This module is what the kernel loads; it names the driver class without
importing it, so torch is only ever imported in the driver host process.
"""

from llmos.syscalls.plugin import DriverEntry, hookimpl


@hookimpl
def llmos_drivers() -> list[DriverEntry]:
    """Provide the CPU driver."""
    return [DriverEntry("cpu", "llmos.drivers.cpu.driver:CpuDriver", "the host CPU, through torch")]
