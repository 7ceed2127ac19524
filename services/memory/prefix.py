"""Prefix caching: full KV blocks found by their content, and the LRU list of free ones.

A full block of `block_size` tokens is named by a chain hash: the hash of its
parent block's hash and its own token ids. Two sequences whose prompts start
with the same tokens therefore compute the same hashes for the blocks of that
common prefix, block by block, and the second one can reuse the first one's
blocks instead of computing their keys and values again. A partial block (the
last one, still filling) has no hash and is never shared this way.

When the last holder of a hashed block frees it, the block keeps its content
and its hash: it counts as free, but a later prompt can still hit it. Such
blocks wait in a least-recently-used list; when the pool needs a fresh block
and its plain free list is empty, the oldest of them is evicted (forgets its
hash) and reused.

Hashes are CPython's `hash` of a tuple of ints, which is deterministic across
runs (only str and bytes hashing is salted). It is 64 bits wide; two different
prefixes with the same hash would share a block wrongly, a risk of about
n^2 / 2^65 for n cached blocks that a simulator accepts.
"""

from collections import OrderedDict
from collections.abc import Sequence

ROOT_HASH = 0
"""The parent hash of a sequence's first block."""


def chain_hash(parent: int, token_ids: Sequence[int]) -> int:
    """Hash of one full block: its parent block's hash and its own token ids."""
    return hash((parent, tuple(token_ids)))


def block_hashes(token_ids: Sequence[int], block_size: int, parent: int = ROOT_HASH) -> list[int]:
    """Chain hashes of every full block of `token_ids`, first block first."""
    hashes = []
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = chain_hash(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes


class PrefixCache:
    """Index of hashed blocks (hash <-> block id) and the LRU list of the free ones.

    It holds block ids only; reference counts live in the pool. The pool tells
    it when a hashed block loses its last holder (`park`), gains one back
    (`revive`) or is taken for new content (`evict`).
    """

    def __init__(self) -> None:
        """Start empty: no block has a hash, none is evictable."""
        self._block_of: dict[int, int] = {}
        self._hash_of: dict[int, int] = {}
        self._lru: OrderedDict[int, None] = OrderedDict()

    @property
    def num_evictable(self) -> int:
        """Free blocks that still hold a cached prefix."""
        return len(self._lru)

    def lookup(self, block_hash: int) -> int | None:
        """The block holding the content named by `block_hash`, or None."""
        return self._block_of.get(block_hash)

    def is_evictable(self, block: int) -> bool:
        """Whether `block` is free but still cached."""
        return block in self._lru

    def register(self, block: int, block_hash: int) -> None:
        """Name a block that has just become full by its chain hash.

        If another block already holds that content the new one stays unnamed:
        the index keeps one block per hash, and the duplicate is freed plainly.
        """
        if block_hash not in self._block_of:
            self._block_of[block_hash] = block
            self._hash_of[block] = block_hash

    def revive(self, block: int) -> None:
        """A cached free block was hit by a new holder: it is no longer evictable."""
        del self._lru[block]

    def park(self, blocks: list[int]) -> list[int]:
        """Blocks that just lost their last holder, in the order they were released.

        Hashed ones become the most recently used evictable blocks (the last of
        `blocks` is the newest); the unhashed ones are returned for the plain
        free list.
        """
        plain = []
        for block in blocks:
            if block in self._hash_of:
                self._lru[block] = None
            else:
                plain.append(block)
        return plain

    def evict(self) -> int:
        """Forget the least recently used free cached block and return its id."""
        block, _ = self._lru.popitem(last=False)
        del self._block_of[self._hash_of.pop(block)]
        return block

    def evictable(self) -> list[int]:
        """The evictable blocks, least recently used (next to evict) first."""
        return list(self._lru)

    def entries(self) -> dict[int, int]:
        """Every hashed block, in use or free: block id -> chain hash."""
        return dict(self._hash_of)
