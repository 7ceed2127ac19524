"""Reference solution of assignment 3: `CapDriver`, a CPU device that enforces its capacity.

`make grade SOLUTIONS=1` puts it in a copy of the tree as
assignments/capdriver.py, the skeleton moved aside to
assignments/capdriver_skeleton.py; nothing imports it from here.
"""

from __future__ import annotations

import torch

from assignments.capdriver_skeleton import DEFAULT_CAPACITY
from assignments.capdriver_skeleton import CapDriver as Skeleton
from llmos.drivers.base import DriverError
from llmos.syscalls import Errno
from llmos.syscalls.driver import DeviceSpec, TensorDesc
from llmos.syscalls.dtypes import nbytes
from llmos.syscalls.ops import OPS


class CapDriver(Skeleton):
    """One `capdev` device: torch on the CPU, at most `capacity_bytes` of tensors."""

    def __init__(self, index: int, options: dict | None = None):
        """Read the capacity option; nothing is held yet."""
        super().__init__(index, options)
        self.capacity = int(self.options.get("capacity_bytes", DEFAULT_CAPACITY))
        self.sizes: dict[int, int] = {}  # tensor id -> bytes it takes
        self.used = 0

    def spec(self) -> DeviceSpec:
        """The device: its capacity, every dtype, every op."""
        return DeviceSpec(description=f"assignment 3: CPU with a capacity of {self.capacity} bytes",
                          capacity_bytes=self.capacity, dtypes=self.dtypes(), ops=sorted(OPS))

    def new_tensor(self, t: TensorDesc) -> torch.Tensor:
        """The storage, if it fits in what is left; ENOMEM otherwise, leaving nothing behind."""
        size = nbytes(t.shape, t.dtype)
        if self.used + size > self.capacity:
            raise DriverError(Errno.ENOMEM, f"{size} bytes do not fit: {self.capacity - self.used} of "
                              f"{self.capacity} left")
        tensor = super(Skeleton, self).new_tensor(t)  # TorchDriver's: the skeleton's is the assignment
        self.sizes[t.tid] = size
        self.used += size
        return tensor

    def free(self, tid: int) -> None:
        """Free the tensor and give its bytes back."""
        super(Skeleton, self).free(tid)
        self.used -= self.sizes.pop(tid)

    def close(self) -> None:
        """Drop every tensor; the whole capacity is free again."""
        super().close()
        self.sizes.clear()
        self.used = 0
