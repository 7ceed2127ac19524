"""Host-visible memory as the conformance kit places it, standing in for the kernel.

The kernel places every tensor of a host-visible device in a shared-memory
file of the device's folder and names the file and offset in each message
(`TensorDesc.shm`, `offset`); the driver only maps those files. `SharedFiles`
does the same for the kit, and on purpose packs tighter than the kernel:
tensors sit side by side in one file, and none starts at byte 0, so a driver
that ignores offsets computes on the wrong bytes. A file is removed once its
last tensor is given back; the caller then tells the driver (`forget`).
"""

import mmap
import os

FILE_BYTES = 1 << 16  # a file holds tensors until the next one does not fit
ALIGN = 64  # every tensor starts at a multiple of this: aligned for every dtype


class SharedFile:
    """One file the kit made and maps, filled from byte ALIGN on."""

    def __init__(self, path: str, size: int):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.path = path
        self.end = ALIGN  # where the next tensor goes
        self.tensors = 0


class SharedFiles:
    """The files of one host-visible device, in `folder`, and how many tensors each holds."""

    def __init__(self, folder: str):
        self.folder = folder
        self.files: dict[str, SharedFile] = {}
        self.current: SharedFile | None = None  # the file new tensors go to
        self.made = 0

    def place(self, size: int) -> tuple[str, int]:
        """A zeroed place for `size` (> 0) bytes, as (path, offset): right after the tensor placed before it,
        or in a new file when the current one has no room."""
        f = self.current
        if f is None or f.end + size > len(f.map):
            self.made += 1
            f = self.current = SharedFile(os.path.join(self.folder, f"kit{self.made}"), max(FILE_BYTES, ALIGN + size))
            self.files[f.path] = f
        offset = f.end
        f.end += -(-size // ALIGN) * ALIGN
        f.tensors += 1
        return f.path, offset

    def start_file(self) -> None:
        """Place the next tensor in a new file."""
        self.current = None

    def write(self, path: str, offset: int, data: bytes) -> None:
        """Put bytes at `offset` of a file, through the kit's own mapping."""
        self.files[path].map[offset : offset + len(data)] = data

    def read(self, path: str, offset: int, size: int) -> bytes:
        """`size` bytes from `offset` of a file, through the kit's own mapping."""
        return self.files[path].map[offset : offset + size]

    def give(self, path: str) -> bool:
        """Give back one tensor placed in `path`; True when it was the last and the file is now removed."""
        f = self.files[path]
        f.tensors -= 1
        if f.tensors:
            return False
        self._remove(f)
        return True

    def close(self) -> None:
        """Remove every file left."""
        for f in list(self.files.values()):
            self._remove(f)

    def _remove(self, f: SharedFile) -> None:
        if f is self.current:
            self.current = None
        del self.files[f.path]
        f.map.close()
        os.unlink(f.path)
