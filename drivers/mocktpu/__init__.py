"""The mock TPU driver plugin: simulated accelerators modelled on a TPU v4 chip.

This module is what the kernel loads; it names the driver class without
importing it, so torch is only ever imported in the driver host process.
"""

from llmos.syscalls.plugin import DriverEntry, hookimpl


@hookimpl
def llmos_drivers() -> list[DriverEntry]:
    """Provide the mock TPU driver."""
    return [
        DriverEntry(
            "mocktpu",
            "llmos.drivers.mocktpu.driver:MockTpuDriver",
            "a simulated TPU v4-like accelerator: real bfloat16 results from torch on the host, simulated time",
        )
    ]
