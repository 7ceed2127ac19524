"""The CUDA driver plugin: one device per visible NVIDIA GPU, through torch.cuda.

This module is what the kernel loads; it names the driver class without
importing it, so torch is only ever imported in the driver host process. On
a machine without a GPU the driver reports no devices and the kernel marks
the kind absent.
"""

from llmos.syscalls.plugin import DriverEntry, hookimpl


@hookimpl
def llmos_drivers() -> list[DriverEntry]:
    """Provide the CUDA driver."""
    return [DriverEntry("cuda", "llmos.drivers.cuda.driver:CudaDriver", "NVIDIA GPUs, through torch.cuda")]
