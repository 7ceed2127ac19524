"""Reference solution of assignment 4: `BlockTables` with copy-on-write on append.

`make grade SOLUTIONS=1` puts it in a copy of the tree as assignments/cow.py,
the skeleton moved aside to assignments/cow_skeleton.py; nothing imports it
from here.
"""

from __future__ import annotations

from assignments.cow_skeleton import BlockTables as Skeleton  # the tree's assignments/cow.py, moved aside


class BlockTables(Skeleton):
    """The skeleton's block tables, with `append` written."""

    def append(self, seq: str, tokens: int) -> list[tuple[int, int]]:
        """Append `tokens` tokens to `seq`, copying a shared partial last block first; the copies made."""
        table = self.tables[seq]
        have = self.tokens[seq]
        partial = have % self.block_size != 0
        shared = partial and tokens > 0 and self.ref[table[-1]] > 1
        fresh = self.blocks_for(have + tokens) - len(table) + shared
        if fresh > self.num_free:
            raise MemoryError(f"appending {tokens} tokens to {seq!r} needs {fresh} free blocks")
        copies = []
        if shared:
            old = table[-1]
            new = self._take()
            self.ref[old] -= 1
            table[-1] = new
            copies.append((old, new))
        while len(table) < self.blocks_for(have + tokens):
            table.append(self._take())
        self.tokens[seq] = have + tokens
        return copies
