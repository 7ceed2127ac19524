"""Slabs: small host-visible tensors cut from shared 1 MiB files instead of a file each.

A tensor of its own file costs a create, a resize and a map in the driver
host, a map in the kernel, and an unmap and an unlink when it is freed: some
tens of microseconds, paid by every small allocation. So tensors of up to
`SMALL_MAX` bytes share slab files. Each slab holds slots of one size class
(a power of two, at least `MIN_SLOT` bytes: so every slot is aligned for
every dtype); a tensor takes a free slot of its class, zeroed as a
fresh file would be. The kernel maps a slab once for all the tensors it
holds (`kernel/tensors.py: ShmMaps`).

Memory: a slab is unlinked and unmapped here as soon as its last slot is
given back, so an idle device holds no slab and nothing stays behind in the
shared memory folder. The cost is rounding: a tensor holds up to twice its
size, and each size class in use holds at most one partly used slab more
than it needs. The kernel charges processes for the tensor's own bytes.
"""

from __future__ import annotations

import os

import torch

SLAB_BYTES = 1 << 20
MIN_SLOT = 256
SMALL_MAX = SLAB_BYTES // 16  # 64 KiB: a slab holds at least 16 slots


def slot_size(size: int) -> int:
    """The size class of a tensor of `size` bytes: the power of two at or above it, at least MIN_SLOT."""
    return max(MIN_SLOT, 1 << (size - 1).bit_length())


def new_shared_file(path: str, size: int) -> torch.Tensor:
    """Create the file `path` of `size` zero bytes (never an existing one) and map it: [size] uint8, shared."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return torch.from_file(path, shared=True, size=size, dtype=torch.uint8)


class Slab:
    """One shared-memory file of equal slots."""

    def __init__(self, path: str, slot: int):
        self.path = path
        self.slot = slot
        self.data = new_shared_file(path, SLAB_BYTES)
        self.free = list(range(SLAB_BYTES - slot, -1, -slot))  # popped from the end
        self.used = 0


class Slabs:
    """The slabs of one device, by size class."""

    def __init__(self, folder: str):
        self.folder = folder
        self.partial: dict[int, list[Slab]] = {}  # size class -> slabs with a free slot
        self.count = 0
        self.made = 0  # slabs ever made: it numbers their files

    def take(self, size: int) -> tuple[Slab, int]:
        """A zeroed slot for `size` bytes (0 < size <= SMALL_MAX): its slab and offset."""
        slot = slot_size(size)
        slabs = self.partial.setdefault(slot, [])
        if not slabs:
            self.made += 1
            slabs.append(Slab(os.path.join(self.folder, f"slab{os.getpid()}-{self.made}"), slot))
            self.count += 1
        slab = slabs[-1]
        offset = slab.free.pop()
        slab.used += 1
        if not slab.free:
            slabs.pop()
        slab.data[offset : offset + size].zero_()
        return slab, offset

    def give(self, slab: Slab, offset: int) -> None:
        """Give a slot back; a slab whose last slot comes back is unlinked."""
        slabs = self.partial[slab.slot]
        if not slab.free:
            slabs.append(slab)
        slab.free.append(offset)
        slab.used -= 1
        if slab.used == 0:
            slabs.remove(slab)
            self.count -= 1
            os.unlink(slab.path)
