"""A pool of fixed-size blocks: a free list and one reference count per block.

Blocks are plain ints (0 .. size-1) and the pool is two Python lists, with no
object per block, so that taking and returning thousands of blocks costs a
slice and a loop. The device KV pool and the host swap pool are both one.
"""


class BlockPool:
    """Free list (a stack: the next block to hand out is at the end) and reference counts.

    A block is free exactly when its count is 0 and it is in `free`; the KV
    cache keeps one more kind of free block (cached, see `prefix.PrefixCache`)
    outside this list. Callers check `len(free)` before `take`.
    """

    __slots__ = ("size", "free", "ref")

    def __init__(self, size: int) -> None:
        """A pool of `size` blocks, all free; the first ones handed out are 0, 1, 2, ..."""
        if size < 0:
            raise ValueError(f"a block pool cannot have a negative size ({size})")
        self.size = size
        self.ref = [0] * size
        self.free = list(range(size - 1, -1, -1))

    def take(self, n: int) -> list[int]:
        """Remove `n` blocks from the free list and return them; counts are left to the caller."""
        free = self.free
        cut = len(free) - n
        if cut < 0 or n < 0:
            raise ValueError(f"cannot take {n} blocks from a free list of {len(free)}")
        blocks = free[cut:]
        del free[cut:]
        blocks.reverse()
        return blocks

    def release(self, blocks: list[int]) -> list[int]:
        """Drop one reference to each block; return those that reached 0 (not yet on the free list)."""
        ref = self.ref
        zeros = []
        for block in blocks:
            count = ref[block] - 1
            ref[block] = count
            if not count:
                zeros.append(block)
        return zeros
