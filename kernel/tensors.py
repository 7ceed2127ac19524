"""The kernel's tensor table: every live tensor, its device, its holders.

A tensor lives on one device and is named in processes' handle tables. The
owner is charged for it; other holders got it through `share`. The bytes of
a host-visible device's tensors are placed by the kernel itself in that
device's shared-memory files (`hostmem.HostMemory`, the tensor's `home`),
which the kernel maps and copies to and from.
"""

from collections import Counter
from dataclasses import dataclass, field

from llmos.syscalls.driver import TensorDesc

from .hostmem import HostMemory
from .proc import KERNEL_PID


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
    home: HostMemory | None = None  # host-visible: the device's files, where it was placed
    shm: str = ""  # host-visible: the file that holds its bytes, from `shm_offset` on
    shm_offset: int = 0
    busy: int = 0  # device work queued or running that names it: its place is given back only after
    lost: str = ""  # why the tensor is gone (its device's driver died), or ""

    def desc(self) -> TensorDesc:
        """The tensor as the driver protocol names it (with its place, on a host-visible device)."""
        return TensorDesc(self.tid, self.shape, self.dtype, self.shm, self.shm_offset)

    def view(self) -> memoryview:
        """The tensor's bytes, as the kernel maps them (host-visible devices)."""
        if not self.shm:
            return memoryview(b"")
        return self.home.view(self.shm, self.shm_offset, self.nbytes)

    def let_go(self, pid: int) -> str:
        """One of `pid`'s handles on it was closed. "free": nobody holds it now; "kernel": its allocator let
        go while others still hold it, so the charge passes to the kernel (a process is never charged for
        memory it did not allocate, docs/memory.md); "held": nothing else changes."""
        self.holders[pid] -= 1
        if self.holders[pid] <= 0:
            del self.holders[pid]
        if not self.holders:
            return "free"
        if self.owner == pid and pid not in self.holders:
            self.owner = KERNEL_PID
            return "kernel"
        return "held"

    def lose(self, why: str) -> None:
        """The tensor's device went away (its driver host is dead); its files go with the device's folder."""
        self.lost = why
        self.home = None


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
        self.by_tid.pop(t.tid, None)

    def being_made(self, owner: int) -> list[Tensor]:
        """Tensors on their way to a device for `owner`: charged to it, no handle open on them yet."""
        return [t for t in self.by_tid.values() if t.owner == owner and not t.holders]

    def on_device(self, device: str) -> list[Tensor]:
        """Every tensor on one device."""
        return [t for t in self.by_tid.values() if t.device == device]
