"""The narrow view of KV memory that the batching layer needs, and a counting implementation.

The scheduler only asks how many blocks a sequence holds, whether it can grow,
and moves whole sequences between device and host. `BlockSpace` is that
protocol; the paged KV cache of the memory service is adapted to it by the
kernel. `CountingBlockSpace` implements it with counters only (no block ids,
no data), which is all the simulator and the property tests need.
"""

from __future__ import annotations

from array import array
from hashlib import blake2b
from typing import Protocol

from llmos.services.memory.admission import Admission
from llmos.services.memory.kv_errors import KVError


class BlockSpace(Protocol):
    """KV memory of one device, counted in fixed-size blocks of `block_size` tokens."""

    block_size: int
    total: int

    def free(self) -> int:
        """Device blocks not held by any sequence."""

    def held(self, rid: int) -> int:
        """Device blocks held by sequence `rid` (0 when it holds none or is swapped out)."""

    def can_grow(self, rid: int, tokens: int) -> bool:
        """Whether sequence `rid` can store `tokens` more tokens on the device now."""

    def grow(self, rid: int, tokens: int) -> None:
        """Let sequence `rid` store `tokens` more tokens, taking blocks as needed.

        Raises MemoryError, changing nothing, when they do not fit; the
        scheduler relies on this to try first and make room only on failure.
        """

    def release(self, rid: int) -> None:
        """Free every block of `rid`, on the device and on the host."""

    def attach_prefix(self, rid: int, limit: int) -> int:
        """Give `rid`, which holds no blocks, the cached blocks of the start of its context (prefix caching).

        At most `limit` tokens, whole blocks only; returns the tokens they
        hold, whose KV need not be computed again (0: none cached, or no cache).
        """

    def can_swap_out(self, rid: int) -> bool:
        """Whether the host has room for the device blocks of `rid`."""

    def swap_out(self, rid: int) -> None:
        """Move the blocks of `rid` from the device to the host."""

    def can_swap_in(self, rid: int) -> bool:
        """Whether the device has room for the host blocks of `rid`."""

    def swap_in(self, rid: int) -> None:
        """Move the blocks of `rid` from the host back to the device."""


ROOT_NAME = 0
"""The parent name of a sequence's first block."""


def content_hash(parent: int, token_ids) -> int:
    """The name of one full block: BLAKE2b (128 bits) of its parent's name and its token ids.

    Collision-resistant, unlike Python's 64-bit `hash`: two different
    prefixes would need a 128-bit collision to share a block, about
    n^2 / 2^129 for n named blocks, so a hit is taken without comparing tokens.
    """
    h = blake2b(parent.to_bytes(16, "little"), digest_size=16)
    h.update(array("q", token_ids).tobytes())
    return int.from_bytes(h.digest(), "little")


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to store `tokens` tokens (ceiling division)."""
    return -(-tokens // block_size)


class CountingBlockSpace:
    """A `BlockSpace` that only counts tokens and blocks per sequence.

    `total` device blocks and `host_total` host (swap) blocks, each holding
    `block_size` tokens.
    """

    def __init__(self, total: int, block_size: int = 16, host_total: int = 0) -> None:
        """Create an empty space of `total` device and `host_total` host blocks."""
        if total < 1 or block_size < 1 or host_total < 0:
            raise ValueError("need total >= 1, block_size >= 1, host_total >= 0")
        self.total = total
        self.block_size = block_size
        self.host_total = host_total
        self._tokens: dict[int, int] = {}  # rid -> tokens stored on the device
        self._host: dict[int, int] = {}  # rid -> tokens stored on the host
        self._used = 0
        self._host_used = 0

    def free(self) -> int:
        """Device blocks not held by any sequence."""
        return self.total - self._used

    def host_free(self) -> int:
        """Host blocks not held by any swapped-out sequence."""
        return self.host_total - self._host_used

    def held(self, rid: int) -> int:
        """Device blocks held by sequence `rid`."""
        return blocks_for(self._tokens.get(rid, 0), self.block_size)

    def can_grow(self, rid: int, tokens: int) -> bool:
        """Whether `tokens` more tokens of `rid` fit in the free device blocks."""
        have = self._tokens.get(rid, 0)
        bs = self.block_size
        extra = (have + tokens + bs - 1) // bs - (have + bs - 1) // bs
        return extra <= self.total - self._used and rid not in self._host

    def grow(self, rid: int, tokens: int) -> None:
        """Store `tokens` more tokens of `rid`; raises MemoryError when they do not fit."""
        have = self._tokens.get(rid, 0)
        bs = self.block_size
        extra = (have + tokens + bs - 1) // bs - (have + bs - 1) // bs
        if extra > self.total - self._used or rid in self._host:
            raise MemoryError(f"sequence {rid}: {tokens} more tokens do not fit")
        self._used += extra
        self._tokens[rid] = have + tokens

    def release(self, rid: int) -> None:
        """Free all blocks of `rid` on the device and on the host."""
        self._used -= blocks_for(self._tokens.pop(rid, 0), self.block_size)
        self._host_used -= blocks_for(self._host.pop(rid, 0), self.block_size)

    def attach_prefix(self, rid: int, limit: int) -> int:
        """No content, so no prefix cache: nothing is ever attached."""
        return 0

    def can_swap_out(self, rid: int) -> bool:
        """Whether the host has room for the device blocks of `rid`."""
        return rid in self._tokens and self.held(rid) <= self.host_total - self._host_used

    def swap_out(self, rid: int) -> None:
        """Move `rid` to the host; raises MemoryError when the host is full."""
        if not self.can_swap_out(rid):
            raise MemoryError(f"sequence {rid}: cannot swap out")
        blocks = self.held(rid)
        self._host[rid] = self._tokens.pop(rid)
        self._used -= blocks
        self._host_used += blocks

    def can_swap_in(self, rid: int) -> bool:
        """Whether the device has room for the host blocks of `rid`."""
        return rid in self._host and blocks_for(self._host[rid], self.block_size) <= self.total - self._used

    def swap_in(self, rid: int) -> None:
        """Move `rid` back to the device; raises MemoryError when it does not fit."""
        if not self.can_swap_in(rid):
            raise MemoryError(f"sequence {rid}: cannot swap in")
        tokens = self._host.pop(rid)
        blocks = blocks_for(tokens, self.block_size)
        self._tokens[rid] = tokens
        self._host_used -= blocks
        self._used += blocks


class PagedBlockSpace:
    """A `BlockSpace` over the memory service's paged KV cache (`services/memory/kv.py`).

    Sequence ids are the scheduler's request ids; `owner_of(rid)` names the
    process each one is charged to, so the cache's per-process quotas apply.
    The cache keeps real block tables, so what the scheduler decides is what
    a driver would be told to do with the blocks.

    Prefix caching, when `context_of(rid)` gives a sequence's token ids (its
    prompt, then its output so far; None: this sequence does not take part).
    A block is named by a chain hash of its tokens and its parent's name
    (`content_hash`) only once its KV is on the device (`written`, which the
    caller reports after each step ran), so a prompt that arrives while
    another is still being computed never maps blocks not yet filled.
    `attach_prefix` maps the named blocks a new sequence's context starts with
    and tells `on_lookup(rid, tokens, found)` (found 0: a miss). `looked_up` and `hit` count the tokens
    asked for and found: a sequence whose lookup missed and that was then
    given nothing to feed (no token budget or no room left in the step) looks
    up again at its next chance, and that lookup replaces the one before in
    the count; a sequence preempted by recompute looks up, and counts, again.

    Swapping only moves the books: the KV data must follow. `moves` lists,
    in order, each `(rid, out, pairs)` move since the caller last took them
    (`take_moves`): out True for device -> host (block, host block) pairs,
    False for host -> device (host block, block) pairs.
    """

    def __init__(self, kv, owner_of, context_of=None, on_lookup=None) -> None:
        """Adapt `kv` (a KVCache); `owner_of(rid)` gives a request's pid, `context_of(rid)` its token ids."""
        self.kv = kv
        self.owner_of = owner_of
        self.context_of = context_of
        self.on_lookup = on_lookup
        self.block_size = kv.block_size
        self.total = kv.num_blocks
        self._chains: dict[int, list[int]] = {}  # rid -> names of its leading full blocks, as far as computed
        self._named: dict[int, int] = {}  # rid -> how many of its leading blocks are named in the cache
        self._counted: dict[int, int] = {}  # rid -> tokens its latest lookup added to `looked_up`
        self.looked_up = 0
        self.hit = 0
        self.moves: list[tuple[int, bool, list[tuple[int, int]]]] = []

    def take_moves(self) -> list[tuple[int, bool, list[tuple[int, int]]]]:
        """The block moves (swaps) since the last call, in order; they are forgotten here."""
        moves, self.moves = self.moves, []
        return moves

    def attach_prefix(self, rid: int, limit: int) -> int:
        """Map the named blocks `rid`'s context starts with (at most `limit` tokens); the tokens they hold.

        The names computed here are kept for `written`, which names the
        blocks that miss once the step that fills them has run.
        """
        ids = self.context_of(rid) if self.context_of is not None else None
        if ids is None:
            return 0
        bs = self.block_size
        chain, parent = [], ROOT_NAME
        for start in range(0, min(limit, len(ids)) - bs + 1, bs):
            parent = content_hash(parent, ids[start : start + bs])
            chain.append(parent)
        self._chains[rid], self._named[rid] = chain, 0
        if rid in self._counted and rid not in self.kv:  # its last lookup missed and fed nothing: this one replaces it
            self.looked_up -= self._counted[rid]
        blocks = self.kv.cached_prefix(chain)
        if blocks:
            try:
                self.kv.allocate_cached(rid, self.owner_of(rid), blocks)
            except KVError:  # no room (or quota) for the blocks it would revive: compute them after all
                blocks = []
        found = len(blocks) * bs
        self._named[rid] = len(blocks)
        self._counted[rid] = limit + 1  # the whole context to feed
        self.looked_up += limit + 1
        self.hit += found
        if self.on_lookup is not None:
            self.on_lookup(rid, limit + 1, found)
        return found

    def written(self, rid: int, tokens: int) -> None:
        """The first `tokens` tokens of `rid` have their KV on the device: name its blocks that are now full."""
        count = self._named.get(rid)
        full = tokens // self.block_size
        if count is None or full <= count or rid not in self.kv:
            return
        chain, bs = self._chains[rid], self.block_size
        if len(chain) < full:  # blocks past the prompt it was attached with: output, or a prompt's last block
            ids, parent = self.context_of(rid), chain[-1] if chain else ROOT_NAME
            for index in range(len(chain), full):
                parent = content_hash(parent, ids[index * bs : (index + 1) * bs])
                chain.append(parent)
        for index in range(count, full):
            self.kv.name_block(rid, index, chain[index])
        self._named[rid] = full

    def free(self) -> int:
        """Device blocks not held by any sequence (cached ones are evictable, so free)."""
        return self.kv.num_free_blocks

    def held(self, rid: int) -> int:
        """Device blocks of `rid` (0 when it has none or is swapped out)."""
        if rid not in self.kv or self.kv.sequence_info(rid)["swapped"]:
            return 0
        return len(self.kv.block_table(rid))

    def can_grow(self, rid: int, tokens: int) -> bool:
        """Whether `rid` can store `tokens` more tokens on the device now."""
        if rid in self.kv:
            return self.kv.can_append([(rid, tokens)]) is Admission.OK
        return self.kv.can_allocate(tokens, owner=self.owner_of(rid)) is Admission.OK

    def grow(self, rid: int, tokens: int) -> None:
        """Allocate or extend `rid`; the cache raises MemoryError and changes nothing if it cannot."""
        if rid in self.kv:
            self.kv.append(rid, tokens)
        else:
            self.kv.allocate(rid, self.owner_of(rid), tokens)

    def release(self, rid: int) -> None:
        """Free `rid`'s blocks, on the device or the host (named ones stay cached until evicted)."""
        self._named.pop(rid, None)
        self._chains.pop(rid, None)
        self._counted.pop(rid, None)
        if rid in self.kv:
            self.kv.free(rid)

    def can_swap_out(self, rid: int) -> bool:
        """Whether the host pool has room for `rid`'s blocks."""
        return self.kv.can_swap_out([rid]) is Admission.OK

    def swap_out(self, rid: int) -> None:
        """Move `rid`'s blocks to the host pool (and note the copies in `moves`)."""
        self.moves.append((rid, True, self.kv.swap_out([rid])))

    def can_swap_in(self, rid: int) -> bool:
        """Whether the device has room for `rid`'s blocks again."""
        return self.kv.can_swap_in([rid]) is Admission.OK

    def swap_in(self, rid: int) -> None:
        """Move `rid`'s blocks back to the device (and note the copies in `moves`)."""
        self.moves.append((rid, False, self.kv.swap_in([rid])))
