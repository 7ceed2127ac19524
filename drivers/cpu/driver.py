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

Option `count` (default 1) splits the CPU into that many devices, cpu0,
cpu1, ..., each served by its own driver host with its own shared-memory
folder, for data-parallel replicas on one machine (docs/distributed.md).
Each gets an equal share of the capacity (so the devices together never
promise the machine's memory twice) and, unless `threads` says otherwise,
an equal share of the cores as torch threads (at least one).

Option `capacity_bytes` caps each device's capacity below that, as the CUDA
driver's option of the same name does: a small device to fill in a test or a
lab without filling the machine's memory.
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

    def __init__(self, index: int, options: dict | None = None):
        options = dict(options or {})
        devices = self.count(options)
        if devices > 1 and not options.get("threads"):
            options["threads"] = max(1, (psutil.cpu_count() or 1) // devices)
        super().__init__(index, options)
        self.devices = devices

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        """The option `count` (default 1): how many devices the CPU is split into; ValueError unless >= 1."""
        count = (options or {}).get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"the cpu driver's option count must be an integer >= 1, not {count!r}")
        return count

    def spec(self) -> DeviceSpec:
        ram = psutil.virtual_memory().available
        remote = bool(self.options.get("remote"))  # on another machine than the kernel: it holds its own tensors
        shm = ram if remote else shutil.disk_usage(self.options["shm_dir"]).free
        share = "" if self.devices == 1 else f", share {self.index + 1} of {self.devices}"
        capacity = min(ram, shm) // self.devices
        return DeviceSpec(
            description=f"host CPU ({psutil.cpu_count()} cores{share}, torch {torch.__version__})",
            capacity_bytes=min(capacity, int(self.options.get("capacity_bytes", capacity))),
            dtypes=self.dtypes(),
            ops=sorted(OPS),
            host_visible=not remote,
        )
