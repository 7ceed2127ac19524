"""Assignment 3: a driver with a capacity of its own, graded by the driver conformance kit.

`CapDriver` (kind `capdev`) computes with torch on the host CPU, as the
built-in CPU driver does, but holds its tensors itself (not in the kernel's
shared memory files: `host_visible` stays False) and has a capacity, the
option `capacity_bytes` (default `DEFAULT_CAPACITY`), that it enforces:

- `spec()` declares the device: a description, `capacity_bytes`, every dtype
  (`self.dtypes()`) and every op (`sorted(OPS)`);
- `new_tensor(t)` refuses a tensor that does not fit in what is left with
  `DriverError(Errno.ENOMEM, ...)`, leaving nothing behind; otherwise it
  makes the tensor (`super().new_tensor(t)`) and counts its bytes
  (`llmos.syscalls.dtypes.nbytes(t.shape, t.dtype)`);
- `free(tid)` gives the bytes back.

`TorchDriver` (drivers/base.py) does the rest: writes, reads, ops. The
grader (grading/graders/test_capdriver.py) runs the conformance kit of
docs/drivers.md on it, in process and through a booted kernel, which finds
the driver through assignments/plugin.py.
"""

from __future__ import annotations

import torch

from llmos.drivers.base import TorchDriver
from llmos.syscalls.driver import DeviceSpec, TensorDesc

DEFAULT_CAPACITY = 64 << 20


class CapDriver(TorchDriver):
    """One `capdev` device: torch on the CPU, at most `capacity_bytes` of tensors."""

    kind = "capdev"
    device = "cpu"

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        """One device on every machine."""
        return 1

    def _todo(self, what: str):
        raise NotImplementedError(
            f"assignment 3 is not done: write CapDriver.{what} in assignments/capdriver.py (docs/assignments.md)")

    def spec(self) -> DeviceSpec:
        """The device as the kernel sees it: description, capacity, dtypes, ops."""
        self._todo("spec")

    def new_tensor(self, t: TensorDesc) -> torch.Tensor:
        """A tensor's storage if it fits in the capacity left, else DriverError(ENOMEM)."""
        self._todo("new_tensor")

    def free(self, tid: int) -> None:
        """Free a tensor and give its bytes back to the capacity."""
        self._todo("free")
