"""Grader of assignment 4: `assignments.cow.BlockTables.append` does copy-on-write as the memory service does.

A hypothesis state machine makes random allocations, forks, appends and
frees on the student's `BlockTables` and on the real `KVCache` side by side,
and checks after every step that both hold the same block tables, the same
reference counts and free blocks, and that appends returned the same copies
(or both refused for lack of blocks).
"""

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llmos.services.memory.kv import KVCache

cow = pytest.importorskip("assignments.cow", reason="assignments/cow.py is missing: restore it from git")

BLOCKS, BLOCK_SIZE = 10, 4


def test_append_is_written():
    """The first thing to do: append must exist and fill a sequence's last block."""
    tables = cow.BlockTables(BLOCKS, BLOCK_SIZE)
    tables.allocate("a", 3)
    assert tables.append("a", 1) == [] and tables.tables["a"] == [0]
    assert tables.append("a", 1) == [] and tables.tables["a"] == [0, 1]


def test_append_into_a_shared_partial_block_copies_it():
    tables = cow.BlockTables(BLOCKS, BLOCK_SIZE)
    tables.allocate("a", 6)  # blocks 0 and 1, block 1 half full
    tables.fork("a", "b")
    assert tables.append("b", 1) == [(1, 2)], "the fork's write into shared block 1 must copy it to block 2"
    assert tables.tables["b"] == [0, 2] and tables.ref[:3] == [2, 1, 1]
    assert tables.append("a", 1) == [], "a is now block 1's only holder: it writes in place"


class SideBySide(RuleBasedStateMachine):
    """The student's BlockTables against the memory service's KVCache, call for call."""

    def __init__(self):
        super().__init__()
        self.mine = cow.BlockTables(BLOCKS, BLOCK_SIZE)
        self.real = KVCache(BLOCKS, BLOCK_SIZE, watermark=0)
        self.names = 0

    def live(self):
        return list(self.real.sequences())

    @rule(tokens=st.integers(1, 3 * BLOCK_SIZE))
    def allocate(self, tokens):
        if self.real.blocks_for(tokens) > self.real.num_free_blocks:
            return
        name = f"s{self.names}"
        self.names += 1
        assert self.mine.allocate(name, tokens) == self.real.allocate(name, 1, tokens)

    @precondition(lambda self: self.real.sequences())
    @rule(data=st.data())
    def fork(self, data):
        parent = data.draw(st.sampled_from(self.live()))
        child = f"s{self.names}"
        self.names += 1
        assert self.mine.fork(parent, child) == self.real.fork(parent, child)

    @precondition(lambda self: self.real.sequences())
    @rule(data=st.data(), tokens=st.integers(1, 2 * BLOCK_SIZE + 1))
    def append(self, data, tokens):
        seq = data.draw(st.sampled_from(self.live()))
        try:
            expected = self.real.append(seq, tokens)
        except MemoryError:
            with pytest.raises(MemoryError):
                self.mine.append(seq, tokens)
            return
        got = self.mine.append(seq, tokens)
        assert got == expected, f"append({seq!r}, {tokens}): copies {got}, the memory service made {expected}"

    @precondition(lambda self: self.real.sequences())
    @rule(data=st.data())
    def free(self, data):
        seq = data.draw(st.sampled_from(self.live()))
        assert self.mine.free(seq) == self.real.free(seq)

    @invariant()
    def same_state(self):
        for seq in self.real.sequences():
            assert self.mine.tables[seq] == self.real.block_table(seq), f"table of {seq}"
        assert self.mine.ref == self.real.snapshot()["ref"]
        assert self.mine.num_free == self.real.num_free_blocks


TestSideBySide = SideBySide.TestCase
TestSideBySide.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
