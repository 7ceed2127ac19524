"""The example driver: a CPU device whose memory is one fixed block, like an accelerator's.

`ArenaDriver` computes with torch on the host CPU, as the built-in CPU driver
does. Its twist is memory: at start it reserves one block of
`capacity_bytes` (option; default 256 MiB) and carves every tensor out of it
with a first-fit allocator (`arena.py`). So it enforces its capacity itself,
can run out of room through fragmentation before its bytes are used up
(ENOMEM, as real device allocators do), and is not host-visible: the kernel
sends tensor bytes through this process (DWrite/DRead).
"""

import torch

from llmos.drivers.base import DriverError, TorchDriver
from llmos.syscalls import Errno
from llmos.syscalls.driver import DeviceSpec, TensorDesc
from llmos.syscalls.dtypes import nbytes
from llmos.syscalls.ops import OPS

from .arena import Arena

DEFAULT_CAPACITY = 256 << 20


class ArenaDriver(TorchDriver):
    """One device of kind `exampledev`: torch on the CPU, tensors in one fixed block of memory."""

    kind = "exampledev"
    device = "cpu"

    def __init__(self, index: int, options: dict | None = None):
        super().__init__(index, options)
        capacity = int(self.options.get("capacity_bytes", DEFAULT_CAPACITY))
        self.block = torch.empty(capacity, dtype=torch.uint8)  # pages are only touched when tensors use them
        self.arena = Arena(capacity)
        self.offsets: dict[int, int] = {}

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        return 1

    def spec(self) -> DeviceSpec:
        return DeviceSpec(
            description=f"example device: host CPU with a {self.arena.size >> 20} MiB block of memory",
            capacity_bytes=self.arena.size,
            dtypes=self.dtypes(),
            ops=sorted(OPS),
        )

    def new_tensor(self, t: TensorDesc) -> torch.Tensor:
        """A view of the block at a free offset, or ENOMEM."""
        size = nbytes(t.shape, t.dtype)
        offset = self.arena.take(size)
        if offset is None:
            raise DriverError(Errno.ENOMEM, f"no room for {size} bytes ({self.arena.free} free, in pieces)")
        self.offsets[t.tid] = offset
        region = self.block[offset : offset + size]
        return region.view(getattr(torch, t.dtype)).view(t.shape)

    def free(self, tid: int) -> None:
        t = self.tensor(tid)
        super().free(tid)
        self.arena.give(self.offsets.pop(tid), t.numel() * t.element_size())

    def close(self) -> None:
        super().close()
        self.offsets.clear()
        self.arena = Arena(self.arena.size)
