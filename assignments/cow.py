"""Assignment 4: copy-on-write on append, in a small model of the memory service's block tables.

`BlockTables` keeps the block tables of sequences in one pool of
`num_blocks` blocks of `block_size` tokens, with a reference count per block,
like `llmos.services.memory.kv.KVCache` without prefix caching, swap,
owners or quotas. Allocation, fork and free are written; `append` is yours.
The grader runs random sequences of calls on your class and on the real
`KVCache` side by side and compares tables, counts, free blocks and the
copies returned (grading/graders/test_cow.py).

The rules `append` must follow (docs/memory.md, "Reference counts, fork and
copy-on-write"):

- new tokens fill the last block's free slots first, then fresh blocks, taken
  with `self._take()` (lowest free id first);
- before writing into a partial last block that another table also holds
  (count > 1), take a fresh block, report the pair (old block, new block)
  so a driver would copy the filled slots, put the new block in this table
  instead, and drop the old block's count by one; the last holder writes in
  place;
- all or nothing: if the pool has too few free blocks, raise MemoryError and
  change nothing;
- return the list of (source, destination) copies, in the order made.
"""

from __future__ import annotations


class BlockTables:
    """Block tables with reference counts, fork and (your) copy-on-write append."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        """An empty pool: every block free, every count 0."""
        if num_blocks < 1 or block_size < 1:
            raise ValueError("need num_blocks >= 1 and block_size >= 1")
        self.block_size = block_size
        self.ref = [0] * num_blocks
        self.tables: dict[str, list[int]] = {}
        self.tokens: dict[str, int] = {}

    @property
    def num_free(self) -> int:
        """Blocks no table holds."""
        return sum(1 for count in self.ref if count == 0)

    def _take(self) -> int:
        """The lowest free block, its count set to 1; MemoryError when none is free."""
        for block, count in enumerate(self.ref):
            if count == 0:
                self.ref[block] = 1
                return block
        raise MemoryError("no free block")

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold `tokens` tokens."""
        return -(-tokens // self.block_size)

    def allocate(self, seq: str, tokens: int) -> list[int]:
        """A new sequence of `tokens` tokens in fresh blocks; its table."""
        if seq in self.tables:
            raise ValueError(f"sequence {seq!r} exists")
        if self.blocks_for(tokens) > self.num_free:
            raise MemoryError(f"{tokens} tokens need more blocks than are free")
        self.tables[seq] = [self._take() for _ in range(self.blocks_for(tokens))]
        self.tokens[seq] = tokens
        return list(self.tables[seq])

    def fork(self, parent: str, child: str) -> list[int]:
        """`child` shares all of `parent`'s blocks: counts go up, nothing is taken or copied."""
        if child in self.tables:
            raise ValueError(f"sequence {child!r} exists")
        table = self.tables[parent]
        for block in table:
            self.ref[block] += 1
        self.tables[child] = list(table)
        self.tokens[child] = self.tokens[parent]
        return list(table)

    def free(self, seq: str) -> int:
        """Drop a sequence; returns how many blocks became free."""
        freed = 0
        for block in self.tables.pop(seq):
            self.ref[block] -= 1
            freed += self.ref[block] == 0
        del self.tokens[seq]
        return freed

    def append(self, seq: str, tokens: int) -> list[tuple[int, int]]:
        """Append `tokens` tokens to `seq`, copying a shared partial last block first; the copies made."""
        raise NotImplementedError(
            "assignment 4 is not done: write BlockTables.append in assignments/cow.py "
            "(copy-on-write on append; docs/assignments.md)")
