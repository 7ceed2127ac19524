"""The kernel's tensor table: every live tensor, its device, its holders.

A tensor lives on one device and is named in processes' handle tables. The
owner is charged for it; other holders got it through `share`. For
host-visible devices the kernel maps the tensor's shared-memory file and
moves bytes itself; tensors cut from one file (a CPU driver's slab) share
one mapping (`ShmMaps`).
"""

import mmap
import os
from collections import Counter
from dataclasses import dataclass, field

from llmos.syscalls.driver import TensorDesc


class ShmMaps:
    """The kernel's mappings of shared-memory files, each shared by the tensors that live in it."""

    def __init__(self) -> None:
        self._maps: dict[str, list] = {}  # path -> [mmap of the whole file, tensors using it]

    def open(self, path: str) -> mmap.mmap:
        """Map `path` (once) for one more tensor."""
        entry = self._maps.get(path)
        if entry is None:
            fd = os.open(path, os.O_RDWR)
            try:
                entry = self._maps[path] = [mmap.mmap(fd, 0), 0]
            finally:
                os.close(fd)
        entry[1] += 1
        return entry[0]

    def close(self, path: str) -> None:
        """One tensor fewer uses `path`; the last one unmaps it."""
        entry = self._maps[path]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del self._maps[path]

    def __len__(self) -> int:
        return len(self._maps)


@dataclass(eq=False)
class Tensor:
    """One tensor on one device."""

    tid: int
    device: str
    shape: list[int]
    dtype: str
    nbytes: int
    owner: int
    maps: ShmMaps
    holders: Counter = field(default_factory=Counter)  # pid -> handles open on it
    shm: str = ""  # host-visible: the file that holds its bytes, from `shm_offset` on
    shm_offset: int = 0
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
            self._map = self.maps.open(self.shm)
        return memoryview(self._map)[self.shm_offset : self.shm_offset + self.nbytes]

    def unmap(self) -> None:
        """Drop the kernel's mapping (the file's, once no other tensor uses it)."""
        if self._map is not None:
            self._map = None
            self.maps.close(self.shm)

    def lose(self, why: str) -> None:
        """The tensor's device went away (its driver host is dead): drop the mapping; the kernel removes the file."""
        self.lost = why
        self.unmap()


class TensorTable:
    """All tensors by id."""

    def __init__(self) -> None:
        self.by_tid: dict[int, Tensor] = {}
        self.next_tid = 1
        self.maps = ShmMaps()

    def create(self, device: str, shape: list[int], dtype: str, nbytes: int, owner: int) -> Tensor:
        """A new tensor record (not yet on the device)."""
        t = Tensor(self.next_tid, device, list(shape), dtype, nbytes, owner, self.maps)
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
