"""Host memory: where the kernel puts the bytes of a host-visible device's tensors.

A host-visible device (the CPU) computes on memory the kernel can map, so
the kernel owns those bytes, as an OS owns RAM: it places each tensor in a
shared-memory file of the device's folder, copies bytes between its socket
and its own mapping for `write` and `read`, and names the file and offset in
every message that asks the driver host to compute on it
(`TensorDesc.shm`). Allocating and freeing such a tensor is then the
kernel's own bookkeeping, with no round trip to the driver host: that round
trip cost the kernel and the host more CPU than everything else in a small
call (docs/benchmarks.md, `llmos bench load`).

Small tensors (up to `SMALL_MAX`) share *slab* files: 1 MiB files of equal
slots of one size class (a power of two, at least `MIN_SLOT`, so every slot
is aligned for every dtype); a file per small tensor cost a create, a
resize and a map, then an unmap and an unlink, per allocation. A slot is
zeroed when it is handed out again, as a fresh file would be. A bigger
tensor gets a file of its own. Files get their pages when they are made
(`posix_fallocate`): a full shared-memory folder is ENOMEM for the
allocation, never a SIGBUS in the kernel when it copies bytes in later.

Memory: a file whose last tensor is given back is removed, except that each
size class keeps one empty slab for the next allocation (as slab allocators
keep a spare, so one tensor allocated and freed in a loop does not make and
remove a file each time): at most 1 MiB per size class in use. Rounding
costs up to twice a small tensor's size; processes are charged the tensor's
own bytes.
"""

from __future__ import annotations

import mmap
import os

SLAB_BYTES = 1 << 20
MIN_SLOT = 256
SMALL_MAX = SLAB_BYTES // 16  # 64 KiB: a slab holds at least 16 slots
_ZEROS = memoryview(bytes(SMALL_MAX))


def slot_size(size: int) -> int:
    """The size class of a tensor of `size` bytes: the power of two at or above it, at least MIN_SLOT."""
    return max(MIN_SLOT, 1 << (size - 1).bit_length())


class _File:
    """One shared-memory file: a slab of equal slots (`slot` > 0), or one big tensor's own (`slot` 0)."""

    __slots__ = ("path", "map", "slot", "free", "used")

    def __init__(self, path: str, size: int, slot: int = 0):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)  # the pages now, or ENOSPC now: never SIGBUS on a later copy
            self.map = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self.path = path
        self.slot = slot
        self.free = list(range(size - slot, -1, -slot)) if slot else []  # popped from the end: lowest first
        self.used = 0


class HostMemory:
    """The shared-memory files of one host-visible device, and the tensors' places in them."""

    def __init__(self, folder: str):
        self.folder = folder
        self.files: dict[str, _File] = {}
        self.partial: dict[int, list[_File]] = {}  # size class -> slabs with a free slot
        self.made = 0  # files ever made: it numbers them

    def place(self, nbytes: int) -> tuple[str, int]:
        """A zeroed place for `nbytes` (> 0) bytes: (file, offset). OSError when the folder is full."""
        if nbytes > SMALL_MAX:
            f = self._new_file(nbytes, 0)
            f.used = 1
            return f.path, 0
        slot = slot_size(nbytes)
        slabs = self.partial.setdefault(slot, [])
        if not slabs:
            slabs.append(self._new_file(SLAB_BYTES, slot))
        slab = slabs[-1]
        offset = slab.free.pop()
        slab.used += 1
        if not slab.free:
            slabs.pop()
        slab.map[offset : offset + nbytes] = _ZEROS[:nbytes]  # what an earlier tensor left there
        return slab.path, offset

    def give(self, path: str, offset: int) -> bool:
        """Give a place back; True when its file was removed (the driver host may still map it)."""
        f = self.files[path]
        f.used -= 1
        if not f.slot:
            self._remove(f)
            return True
        slabs = self.partial[f.slot]
        if not f.free:
            slabs.append(f)
        f.free.append(offset)
        if f.used == 0 and len(slabs) > 1:  # another slab of its class has room: this one is not the spare
            slabs.remove(f)
            self._remove(f)
            return True
        return False

    def view(self, path: str, offset: int, nbytes: int) -> memoryview:
        """The bytes of one placed tensor, as the kernel maps them."""
        return memoryview(self.files[path].map)[offset : offset + nbytes]

    def close(self) -> None:
        """Unmap every file (the device is gone; whoever removes its folder removes the files)."""
        for f in self.files.values():
            f.map.close()
        self.files.clear()
        self.partial.clear()

    def __len__(self) -> int:
        return len(self.files)

    def _new_file(self, size: int, slot: int) -> _File:
        self.made += 1
        name = f"slab{slot}-{self.made}" if slot else f"t{self.made}"  # a slab's name says its size class
        f = _File(os.path.join(self.folder, name), size, slot)
        self.files[f.path] = f
        return f

    def _remove(self, f: _File) -> None:
        del self.files[f.path]
        f.map.close()
        os.unlink(f.path)
