"""A first-fit allocator over one block of bytes: where each tensor lives in the device's memory.

Pure bookkeeping, no torch: `take` finds room for a tensor (or None when no
hole is big enough), `give` returns it and merges neighbouring holes. Offsets
are aligned to `ALIGN` bytes, so a tensor of any dtype can be a view of the
block.
"""

ALIGN = 64


class Arena:
    """The holes of a block of `size` bytes, as sorted (offset, length) pairs."""

    def __init__(self, size: int):
        self.size = size
        self.holes: list[tuple[int, int]] = [(0, size)] if size else []

    @staticmethod
    def rounded(nbytes: int) -> int:
        """The room a tensor of `nbytes` takes: a whole number of ALIGN-byte units."""
        return -(-nbytes // ALIGN) * ALIGN

    def take(self, nbytes: int) -> int | None:
        """The offset of a new region of `nbytes` (first fit), or None if no hole holds it."""
        need = self.rounded(nbytes)
        if need == 0:
            return 0
        for i, (offset, length) in enumerate(self.holes):
            if length >= need:
                self.holes[i : i + 1] = [(offset + need, length - need)] if length > need else []
                return offset
        return None

    def give(self, offset: int, nbytes: int) -> None:
        """Return the region taken at `offset` for `nbytes`; merge it with the holes beside it."""
        length = self.rounded(nbytes)
        if length == 0:
            return
        holes = sorted(self.holes + [(offset, length)])
        merged = [holes[0]]
        for start, size in holes[1:]:
            last_start, last_size = merged[-1]
            if last_start + last_size == start:
                merged[-1] = (last_start, last_size + size)
            else:
                merged.append((start, size))
        self.holes = merged

    @property
    def free(self) -> int:
        """Bytes in holes."""
        return sum(length for _, length in self.holes)
