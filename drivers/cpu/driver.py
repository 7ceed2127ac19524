"""The CPU driver: ops with torch on the host, on tensors in the kernel's shared memory files.

Its memory is host-visible: the kernel places each tensor in a shared memory
file of this device's folder (`shm_dir`), copies bytes between its socket and
its own mapping of that file, and names the file and offset in every message
that computes on the tensor. This driver maps each file once and drops it
when the kernel says it is gone (`TorchDriver.resolve`, `forget`); it never
allocates. Capacity is what psutil says the machine can give (the smaller of
available RAM and free space in the shared memory folder).

On another machine than the kernel (`llmos host`, option `remote`) it cannot
see the kernel's files: it allocates its tensors itself, as a GPU driver
does, and their bytes travel in message frames; capacity is available RAM.
"""

import shutil

import psutil
import torch

from llmos.syscalls.driver import DeviceSpec
from llmos.syscalls.ops import OPS

from ..base import TorchDriver


class CpuDriver(TorchDriver):
    """The host CPU as one llmos device."""

    kind = "cpu"
    device = "cpu"

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        return 1

    def spec(self) -> DeviceSpec:
        ram = psutil.virtual_memory().available
        remote = bool(self.options.get("remote"))  # on another machine than the kernel: it holds its own tensors
        shm = ram if remote else shutil.disk_usage(self.options["shm_dir"]).free
        return DeviceSpec(
            description=f"host CPU ({psutil.cpu_count()} cores, torch {torch.__version__})",
            capacity_bytes=min(ram, shm),
            dtypes=self.dtypes(),
            ops=sorted(OPS),
            host_visible=not remote,
        )
