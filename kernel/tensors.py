"""The kernel's tensor table: every live tensor, its device, its holders.

A tensor lives on one device and is named in processes' handle tables. The
owner is charged for it; other holders got it through `share`. For
host-visible devices the kernel maps the tensor's shared-memory file and
moves bytes itself.
"""

import mmap
import os
from collections import Counter
from dataclasses import dataclass, field

from llmos.syscalls.driver import TensorDesc


@dataclass(eq=False)
class Tensor:
    """One tensor on one device."""

    tid: int
    device: str
    shape: list[int]
    dtype: str
    nbytes: int
    owner: int
    holders: Counter = field(default_factory=Counter)  # pid -> handles open on it
    shm: str = ""
    lost: str = ""  # why the tensor is gone (its device's driver died), or ""
    _map: mmap.mmap | None = None

    def desc(self) -> TensorDesc:
        """The tensor as the driver protocol names it."""
        return TensorDesc(self.tid, self.shape, self.dtype)

    def view(self) -> memoryview:
        """The tensor's bytes, mapped from its shared-memory file (host-visible devices)."""
        if self.nbytes == 0:
            return memoryview(b"")
        if self._map is None:
            fd = os.open(self.shm, os.O_RDWR)
            try:
                self._map = mmap.mmap(fd, self.nbytes)
            finally:
                os.close(fd)
        return memoryview(self._map)

    def unmap(self) -> None:
        """Drop the kernel's mapping."""
        if self._map is not None:
            self._map.close()
            self._map = None

    def lose(self, why: str) -> None:
        """The tensor's device went away (its driver host is dead): drop the mapping; the kernel removes the file."""
        self.lost = why
        self.unmap()


class TensorTable:
    """All tensors by id."""

    def __init__(self) -> None:
        self.by_tid: dict[int, Tensor] = {}
        self.next_tid = 1

    def create(self, device: str, shape: list[int], dtype: str, nbytes: int, owner: int) -> Tensor:
        """A new tensor record (not yet on the device)."""
        t = Tensor(self.next_tid, device, list(shape), dtype, nbytes, owner)
        self.next_tid += 1
        self.by_tid[t.tid] = t
        return t

    def drop(self, t: Tensor) -> None:
        """Forget a tensor."""
        t.unmap()
        self.by_tid.pop(t.tid, None)

    def being_made(self, owner: int) -> list[Tensor]:
        """Tensors on their way to a device for `owner`: charged to it, no handle open on them yet."""
        return [t for t in self.by_tid.values() if t.owner == owner and not t.holders]

    def on_device(self, device: str) -> list[Tensor]:
        """Every tensor on one device."""
        return [t for t in self.by_tid.values() if t.device == device]
