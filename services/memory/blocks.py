"""A pool of fixed-size blocks: which are free, and one reference count per block.

Blocks are plain ints (0 .. size-1). The pool holds a list of counts and a
bytearray of free flags, with no object per block, so that taking and
returning thousands of blocks costs a few C-level operations per block. The
device KV pool and the host swap pool are both one.

The pool hands out the lowest free ids first. A sequence that grows on a
quiet pool then gets consecutive blocks (0, 1, 2, ... once everything before
it was freed, whatever order that happened in), and a model step can read a
lone sequence's consecutive blocks as one slice of the cache instead of
gathering them block by block (`TinyGPT.step`).
"""


class BlockPool:
    """Free flags, handed out lowest id first, and reference counts.

    A block is free exactly when its count is 0 and its flag is set; the KV
    cache keeps one more kind of free block (cached, see `prefix.PrefixCache`)
    outside this pool's free set. Callers check `num_free` before `take`.
    """

    __slots__ = ("size", "ref", "num_free", "_free", "_low", "_ids")

    def __init__(self, size: int) -> None:
        """A pool of `size` blocks, all free; the first ones handed out are 0, 1, 2, ..."""
        if size < 0:
            raise ValueError(f"a block pool cannot have a negative size ({size})")
        self.size = size
        self.ref = [0] * size
        self.num_free = size
        self._free = bytearray(b"\x01") * size  # 1: free
        self._low = 0  # no free block has a lower id
        self._ids = list(range(size))  # a run of ids is a slice of this: no int built per block

    def take(self, n: int) -> list[int]:
        """Remove the `n` lowest free blocks from the free set and return them, ascending; counts are left to the caller."""
        if n < 0 or n > self.num_free:
            raise ValueError(f"cannot take {n} blocks from a pool with {self.num_free} free")
        free, at = self._free, self._low
        if n > 1 and free.count(1, at, at + n) == n:  # the next n ids are all free: one slice
            blocks = self._ids[at : at + n]
            free[at : at + n] = bytes(n)
            at += n
        else:
            find, blocks = free.find, []
            for _ in range(n):
                at = find(1, at)
                free[at] = 0
                blocks.append(at)
                at += 1
        self._low = at
        self.num_free -= n
        return blocks

    def give(self, blocks: list[int]) -> None:
        """Put blocks whose count is 0 back in the free set."""
        if blocks:
            free = self._free
            for block in blocks:
                free[block] = 1
            self.num_free += len(blocks)
            self._low = min(self._low, min(blocks))

    def free_ids(self) -> list[int]:
        """The free blocks, ascending (for snapshots and tests)."""
        free = self._free
        return [block for block in range(self.size) if free[block]]

    def release(self, blocks: list[int]) -> list[int]:
        """Drop one reference to each block; return those that reached 0 (not yet back in the free set)."""
        ref = self.ref
        zeros = []
        for block in blocks:
            count = ref[block] - 1
            ref[block] = count
            if not count:
                zeros.append(block)
        return zeros
