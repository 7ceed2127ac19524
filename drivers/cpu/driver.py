"""The CPU driver: tensors in shared memory files, ops with torch on the host.

Its memory is host-visible: each tensor is a file in the kernel's shared
memory folder, mapped here by torch and in the kernel by mmap, so the kernel
copies tensor bytes straight between its socket and the tensor, with no hop
through this process. Small tensors share slab files (`slabs.py`).
Capacity is what psutil says the machine can give (the smaller of available
RAM and free space in the shared memory folder).
"""

import os
import shutil

import psutil
import torch

from llmos.syscalls.driver import DeviceSpec, TensorDesc
from llmos.syscalls.dtypes import nbytes
from llmos.syscalls.ops import OPS

from ..base import TorchDriver, torch_dtype
from .slabs import SMALL_MAX, Slab, Slabs, new_shared_file


class CpuDriver(TorchDriver):
    """The host CPU as one llmos device."""

    kind = "cpu"
    device = "cpu"

    def __init__(self, index: int, options: dict | None = None):
        super().__init__(index, options)
        self.slabs = Slabs(self.shm_dir())
        self.slots: dict[int, tuple[Slab, int]] = {}  # tid -> (slab, offset) of a small tensor

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        return 1

    def shm_dir(self) -> str:
        """Where this device's tensor files live (given by the kernel)."""
        return self.options["shm_dir"]

    def spec(self) -> DeviceSpec:
        ram = psutil.virtual_memory().available
        shm = shutil.disk_usage(self.shm_dir()).free
        return DeviceSpec(
            description=f"host CPU ({psutil.cpu_count()} cores, torch {torch.__version__})",
            capacity_bytes=min(ram, shm),
            dtypes=self.dtypes(),
            ops=sorted(OPS),
            host_visible=True,
        )

    def new_tensor(self, t: TensorDesc) -> tuple[torch.Tensor, str]:
        """A small tensor gets a slot of a slab; others a file of their own."""
        size = nbytes(t.shape, t.dtype)
        if size == 0:
            return torch.empty(t.shape, dtype=torch_dtype(t.dtype)), ""
        if size <= SMALL_MAX:
            slab, offset = self.slabs.take(size)
            self.slots[t.tid] = (slab, offset)
            return slab.data[offset : offset + size].view(torch_dtype(t.dtype)).view(t.shape), slab.path
        path = os.path.join(self.shm_dir(), f"t{t.tid}")
        return new_shared_file(path, size).view(torch_dtype(t.dtype)).view(t.shape), path

    def shm_offset(self, tid: int) -> int:
        slot = self.slots.get(tid)
        return slot[1] if slot is not None else 0

    def free(self, tid: int) -> None:
        super().free(tid)
        slot = self.slots.pop(tid, None)
        if slot is not None:
            return self.slabs.give(*slot)
        path = os.path.join(self.shm_dir(), f"t{tid}")
        if os.path.exists(path):
            os.unlink(path)

    def close(self) -> None:
        for tid in list(self.tensors):
            self.free(tid)
