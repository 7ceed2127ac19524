"""Paged KV cache: one device pool of fixed-size blocks and the block table of each sequence.

A transformer keeps the keys and values (KV) of every token it has seen. This
service does the bookkeeping of where they live, the way PagedAttention does:
device memory for one model is cut into `num_blocks` blocks of `block_size`
tokens, and each sequence has a block table, the list of its block ids in
token order, so a sequence grows one block at a time instead of reserving its
maximum length up front. The service never touches tensors: it answers with
block ids, and with (source, destination) pairs whenever a driver must copy a
block's contents.

Two callers use it.
- The kernel: `can_allocate` (admission: OK / LATER / NEVER, keeping a
  `watermark` of free blocks for the growth of running sequences, and each
  owner's quota), `allocate`, `fork`, `free`, `free_owner` (process exit),
  `block_table`, `sequence_info`, `stats`, `owner_stats`.
- The scheduler's batching layer: `append_many` (one decode or prefill step
  of many sequences at once), `can_append` / `blocks_needed` (does the next
  step fit), and preemption by `free` (recompute later) or by `swap_out` /
  `swap_in` to a host pool (`can_swap_out` / `can_swap_in` ask first).

Sharing. A block has a reference count: the number of block tables that hold
it. `fork` gives the child the parent's table and raises each count by one;
it allocates nothing. When a sequence appends into a partial last block that
another table also holds, that one block is copied first (copy-on-write) and
the pair is reported; full blocks are never written again, so they are never
copied. Prompts given as token ids take part in prefix caching (see
`prefix.py`): their full blocks are found by content and shared across
sequences and owners; freed cached blocks stay reusable until evicted, least
recently used first.

Accounting. Every block is either used (count > 0), free, or cached (count 0
but still holding a known prefix; cached blocks count as free, since taking
one only costs its eviction). So `free + used == total` always, and `free`
includes `cached`. An owner's usage is the number of distinct device blocks
its sequences hold; a block shared by two owners counts for both. No operation
makes an owner's usage exceed its quota; `set_quota` below the current usage
is allowed and only stops that owner from growing.

The service is a pure state machine: no clock (LRU is by order of release),
no I/O, and the same calls always give the same state.
"""

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence

from .admission import Admission
from .blocks import BlockPool
from .kv_errors import (
    KVDoubleFree,
    KVError,
    KVOutOfBlocks,
    KVOutOfHostBlocks,
    KVQuotaExceeded,
    KVSequenceExists,
    KVSwapState,
    KVUnknownSequence,
)
from .prefix import ROOT_HASH, PrefixCache, block_hashes, chain_hash

Tokens = int | Sequence[int]
"""Tokens to store: a count, or the token ids themselves (which enables prefix caching)."""

RECENTLY_FREED = 4096
"""How many freed sequence ids are remembered, to tell a double free from an unknown id."""


class _Seq:
    """One sequence: owner, block table and fill, plus the prefix-hash state if tracked."""

    __slots__ = ("owner", "table", "num_tokens", "tail", "last_hash", "swapped")

    def __init__(self, owner, table, num_tokens, tail, last_hash):
        self.owner = owner
        self.table = table  # device block ids, or host block ids while swapped
        self.num_tokens = num_tokens
        self.tail = tail  # token ids of the partial last block; None: ids unknown, no hashing
        self.last_hash = last_hash  # chain hash of the last full block
        self.swapped = False


class KVCache:
    """The paged KV cache of one model on one device, with its host swap pool.

    num_blocks, block_size: the device pool. host_blocks: the swap pool's size
    (0: no swapping). watermark: fraction of the device blocks that admission
    (`can_allocate`, `can_swap_in`) keeps free for running sequences to grow
    into. default_quota: blocks an owner may hold unless `set_quota` says
    otherwise (None: no limit but the pool). device, layout: labels for stats
    and messages.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        *,
        host_blocks: int = 0,
        watermark: float = 0.01,
        default_quota: int | None = None,
        device: str = "device",
        layout: str = "model",
    ) -> None:
        """Create an empty pool; every block starts free."""
        if block_size < 1:
            raise KVError(f"block_size must be at least 1 token, not {block_size}")
        if not 0 <= watermark < 1:
            raise KVError(f"watermark is a fraction of the pool in [0, 1), not {watermark}")
        self.block_size = block_size
        self.device = device
        self.layout = layout
        self.watermark_blocks = int(watermark * num_blocks)
        self.default_quota = default_quota
        self._pool = BlockPool(num_blocks)
        self._host = BlockPool(host_blocks)
        self._prefix = PrefixCache()
        self._seqs: dict[Hashable, _Seq] = {}
        self._held: dict[Hashable, dict[int, int]] = {}  # owner -> block -> tables of that owner holding it
        self._quotas: dict[Hashable, int] = {}
        self._freed: OrderedDict[Hashable, None] = OrderedDict()
        self.evictions = 0  # cached blocks taken back for other uses

    # -- sizes ---------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        """Device blocks in the pool."""
        return self._pool.size

    @property
    def num_free_blocks(self) -> int:
        """Device blocks that can be handed out now: plain free plus cached (evictable)."""
        return self._pool.num_free + self._prefix.num_evictable

    @property
    def num_cached_blocks(self) -> int:
        """Free device blocks that still hold a reusable prefix (a part of `num_free_blocks`)."""
        return self._prefix.num_evictable

    @property
    def num_used_blocks(self) -> int:
        """Device blocks held by at least one sequence."""
        return self._pool.size - self.num_free_blocks

    @property
    def num_host_blocks(self) -> int:
        """Blocks in the host swap pool."""
        return self._host.size

    @property
    def num_free_host_blocks(self) -> int:
        """Host swap blocks not holding a swapped-out block."""
        return self._host.num_free

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold `num_tokens` tokens."""
        return -(-num_tokens // self.block_size)

    # -- quotas --------------------------------------------------------------

    def quota(self, owner: Hashable) -> int | None:
        """The owner's quota in device blocks; None means only the pool limits it."""
        return self._quotas.get(owner, self.default_quota)

    def set_quota(self, owner: Hashable, blocks: int | None) -> None:
        """Set an owner's quota in blocks (None: back to the default).

        Below the owner's current usage it holds what it has, but cannot grow.
        """
        if blocks is None:
            self._quotas.pop(owner, None)
        elif blocks < 0:
            raise KVError(f"a quota is a number of blocks >= 0, not {blocks}")
        else:
            self._quotas[owner] = blocks

    def usage(self, owner: Hashable) -> int:
        """Distinct device blocks held by the owner's sequences."""
        held = self._held.get(owner)
        return len(held) if held else 0

    def forget_owner(self, owner: Hashable) -> None:
        """Drop an exited owner's quota entry; it must hold no sequence (call `free_owner` first)."""
        left = self.sequences(owner)
        if left:
            raise KVError(
                f"owner {owner!r} still has {len(left)} sequences in {self._name()}; free_owner({owner!r}) first"
            )
        self._quotas.pop(owner, None)
        self._held.pop(owner, None)

    # -- admission -----------------------------------------------------------

    def can_allocate(self, tokens: Tokens, owner: Hashable | None = None) -> Admission:
        """Would `allocate` of these tokens be admitted now?

        NEVER: more blocks than the pool minus its watermark, or than the
        owner's quota. LATER: it would leave fewer than `watermark_blocks` free,
        or grow the owner past its quota; retry after others free. OK
        otherwise. Cached prefix blocks the prompt would reuse are counted as
        such (a hit on a block in use costs nothing).
        """
        ids, num_tokens = self._tokens(tokens)
        size = self.blocks_for(num_tokens)
        hits, cached_hits, new_for_owner = self._prefix_plan(owner, size, self._hashes(ids))
        need = size - len(hits) + cached_hits
        if owner is None:
            return self._admit(size, need, {})
        return self._admit(size, need, {owner: (size, new_for_owner)})

    def can_swap_out(self, seq_ids: Iterable[Hashable]) -> Admission:
        """Does the host pool have room for this group: OK, LATER (others must swap in first) or NEVER?"""
        need = len(_distinct_blocks(self._group(seq_ids, swapped=False, action="swap out")))
        if need > self._host.size:
            return Admission.NEVER
        return Admission.OK if need <= self._host.num_free else Admission.LATER

    def can_swap_in(self, seq_ids: Iterable[Hashable]) -> Admission:
        """Would `swap_in` of this group be admitted now (same rules as `can_allocate`)?"""
        seqs = self._group(seq_ids, swapped=True, action="swap in")
        distinct, per_owner = self._swap_in_need(seqs)
        return self._admit(len(distinct), len(distinct), {o: (n, n) for o, n in per_owner.items()})

    def can_append(self, steps: Iterable[tuple[Hashable, Tokens]]) -> Admission:
        """Does this step (sequence id, tokens) fit? Growth may use the watermark.

        NEVER: some sequence would grow, on its own, to more blocks than the
        pool or its owner's quota. LATER: not enough free blocks or quota now,
        so the scheduler should preempt (free or swap out) and retry. OK
        otherwise.
        """
        items, need, per_owner = self._plan_step(steps)
        for seq, _, n in items:
            size = self.blocks_for(seq.num_tokens + n)
            quota = self.quota(seq.owner)
            if size > len(seq.table) and (size > self.num_blocks or (quota is not None and size > quota)):
                return Admission.NEVER
        if need > self.num_free_blocks:
            return Admission.LATER
        for owner, extra in per_owner.items():
            quota = self.quota(owner)
            if quota is not None and extra and self.usage(owner) + extra > quota:
                return Admission.LATER
        return Admission.OK

    def blocks_needed(self, steps: Iterable[tuple[Hashable, Tokens]]) -> int:
        """Fresh device blocks `append_many(steps)` would take, copy-on-write copies included."""
        return self._plan_step(steps)[1]

    # -- allocate, fork, free (the kernel's calls) ---------------------------

    def allocate(self, seq_id: Hashable, owner: Hashable, tokens: Tokens = 0) -> list[int]:
        """Create a sequence holding `tokens` (a count, or token ids for prefix caching).

        Returns its block table. Leading full blocks whose content is cached
        are reused, not allocated. Raises KVSequenceExists, KVOutOfBlocks or
        KVQuotaExceeded (the watermark is not enforced here: that is the job
        of `can_allocate`, which the caller asks first).
        """
        ids, num_tokens = self._tokens(tokens)
        hashes = self._hashes(ids)
        hits = self.cached_prefix(hashes)
        seq = self._create(seq_id, owner, num_tokens, hits)
        if ids is not None:
            for i in range(len(hits), len(hashes)):
                self._prefix.register(seq.table[i], hashes[i])
            seq.tail = ids[len(hashes) * self.block_size :]
            seq.last_hash = hashes[-1] if hashes else ROOT_HASH
        return seq.table.copy()

    def cached_prefix(self, hashes: Sequence[int]) -> list[int]:
        """The blocks that hold the leading blocks named by `hashes` (chain hashes), up to the first miss."""
        hits = []
        for block_hash in hashes:
            block = self._prefix.lookup(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def allocate_cached(self, seq_id: Hashable, owner: Hashable, blocks: list[int]) -> list[int]:
        """Create a sequence whose table is exactly `blocks` (full, cached: from `cached_prefix`).

        For callers that name blocks themselves once their content is
        written (`name_block`): the kernel, whose steps run after it plans
        them. Raises like `allocate`; grow it with `append` (a count).
        """
        return self._create(seq_id, owner, len(blocks) * self.block_size, blocks).table.copy()

    def name_block(self, seq_id: Hashable, index: int, block_hash: int) -> None:
        """Block `index` of a sequence is full and written: name it by its chain hash for later prompts."""
        self._prefix.register(self._on_device(seq_id, "name a block of").table[index], block_hash)

    def _create(self, seq_id: Hashable, owner: Hashable, num_tokens: int, hits: list[int]) -> _Seq:
        """A new sequence of `num_tokens` whose first blocks are the cached `hits`, the rest fresh."""
        if seq_id in self._seqs:
            raise KVSequenceExists(f"sequence {seq_id!r} already exists in {self._name()}; free it or pick a new id")
        size = self.blocks_for(num_tokens)
        cached_hits, new_for_owner = self._hit_costs(owner, size, hits)
        ref = self._pool.ref
        self._check_room(size - len(hits) + cached_hits, {owner: new_for_owner}, f"allocating sequence {seq_id!r}")
        held = self._held.setdefault(owner, {})
        for block in hits:
            if not ref[block]:
                self._prefix.revive(block)
            ref[block] += 1
            held[block] = held.get(block, 0) + 1
        fresh = self._take(size - len(hits))
        for block in fresh:
            ref[block] = 1
        held.update(dict.fromkeys(fresh, 1))
        seq = self._seqs[seq_id] = _Seq(owner, hits + fresh, num_tokens, None, ROOT_HASH)
        self._freed.pop(seq_id, None)
        return seq

    def fork(self, parent: Hashable, child: Hashable) -> list[int]:
        """Create `child` sharing all of `parent`'s blocks (same owner); allocates nothing.

        Returns the child's block table. Later appends copy a shared partial
        last block before writing to it (see `append_many`).
        """
        seq = self._on_device(parent, "fork")
        if child in self._seqs:
            raise KVSequenceExists(f"cannot fork {parent!r} into {child!r}: {child!r} already exists; pick a new id")
        ref = self._pool.ref
        held = self._held[seq.owner]
        for block in seq.table:
            ref[block] += 1
            held[block] += 1
        twin = _Seq(seq.owner, seq.table.copy(), seq.num_tokens, None, seq.last_hash)
        if seq.tail is not None:
            twin.tail = seq.tail.copy()
        self._seqs[child] = twin
        self._freed.pop(child, None)
        return seq.table.copy()

    def free(self, seq_id: Hashable) -> int:
        """Free a sequence (on the device or swapped out); returns the device blocks it freed.

        Blocks still held by other tables stay; hashed blocks whose last holder
        left become cached, the sequence's last block first in eviction order.
        Raises KVDoubleFree or KVUnknownSequence.
        """
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            raise self._unknown(seq_id, "free")
        self._freed[seq_id] = None
        if len(self._freed) > RECENTLY_FREED:
            self._freed.popitem(last=False)
        if seq.swapped:
            self._host.give(self._host.release(seq.table))
            return 0
        return self._release(seq.owner, seq.table)

    def free_many(self, seq_ids: Iterable[Hashable]) -> int:
        """Free several sequences, all or none (ids are checked first); returns device blocks freed."""
        ids = self._distinct_ids(seq_ids, "free")
        for seq_id in ids:
            if seq_id not in self._seqs:
                raise self._unknown(seq_id, "free")
        return sum(self.free(seq_id) for seq_id in ids)

    def free_owner(self, owner: Hashable) -> list[Hashable]:
        """Free every sequence of an owner (process exit or kill); returns their ids."""
        ids = self.sequences(owner)
        for seq_id in ids:
            self.free(seq_id)
        return ids

    # -- growth and preemption (the scheduler's calls) -----------------------

    def append(self, seq_id: Hashable, tokens: Tokens = 1) -> list[tuple[int, int]]:
        """Append tokens to one sequence; see `append_many`."""
        return self.append_many([(seq_id, tokens)])

    def append_many(self, steps: Iterable[tuple[Hashable, Tokens]]) -> list[tuple[int, int]]:
        """One batched step: append tokens (a count or token ids) to each listed sequence.

        All or nothing: raises KVOutOfBlocks or KVQuotaExceeded before changing
        anything. Returns the copy-on-write copies as (source block,
        destination block): the driver must copy the source's filled slots
        into the destination before this step writes. A copy happens only when
        a sequence appends into a partial last block that another table also
        holds; when every holder of such a block appends in one step, the last
        one in `steps` order writes in place. Appending a count to a sequence
        created from token ids stops its prefix caching (its ids are unknown
        from then on).
        """
        items, need, per_owner = self._plan_step(steps)
        self._check_room(need, per_owner, "appending")
        block_size = self.block_size
        ref = self._pool.ref
        copies = []
        for seq, ids, n in items:
            if not n:
                continue
            table = seq.table
            held = self._held[seq.owner]
            old = seq.num_tokens
            if old % block_size and ref[table[-1]] > 1:
                src = table[-1]
                dst = self._take(1)[0]
                ref[src] -= 1
                _drop_held(held, [src])
                ref[dst] = 1
                held[dst] = 1
                table[-1] = dst
                copies.append((src, dst))
            grow = -(-(old + n) // block_size) - len(table)
            if grow:
                fresh = self._take(grow)
                for block in fresh:
                    ref[block] = 1
                held.update(dict.fromkeys(fresh, 1))
                table.extend(fresh)
            seq.num_tokens = old + n
            if seq.tail is not None:
                if ids is None:
                    seq.tail = None
                else:
                    self._hash_full_blocks(seq, old, ids)
        return copies

    def swap_out(self, seq_ids: Iterable[Hashable]) -> list[tuple[int, int]]:
        """Move a group of sequences' blocks to the host pool; returns (device, host) copies.

        A block shared inside the group is copied once and stays shared on the
        host. The device blocks are released at once: the driver must do the
        copies before anything is allocated again. Raises KVOutOfHostBlocks.
        """
        seqs = self._group(seq_ids, swapped=False, action="swap out")
        distinct = _distinct_blocks(seqs)
        host = self._host
        if len(distinct) > host.num_free:
            raise KVOutOfHostBlocks(
                f"swapping out {len(seqs)} sequences needs {len(distinct)} host blocks but "
                f"{self._name()} has {host.num_free} of {host.size} free; free or swap in others first"
            )
        where = dict(zip(distinct, host.take(len(distinct))))
        for seq in seqs:
            host_table = [where[block] for block in seq.table]
            for block in host_table:
                host.ref[block] += 1
            self._release(seq.owner, seq.table)
            seq.table = host_table
            seq.swapped = True
        return list(where.items())

    def swap_in(self, seq_ids: Iterable[Hashable]) -> list[tuple[int, int]]:
        """Bring a swapped-out group back to the device; returns (host, device) copies.

        Needs fresh device blocks (and quota) for every distinct host block;
        the watermark is for `can_swap_in` to enforce. Blocks that come back
        are not prefix-cache entries again. The host blocks are released at
        once: the driver must do the copies before the next swap_out. Raises
        KVOutOfBlocks or KVQuotaExceeded.
        """
        seqs = self._group(seq_ids, swapped=True, action="swap in")
        distinct, per_owner = self._swap_in_need(seqs)
        self._check_room(len(distinct), per_owner, f"swapping in {len(seqs)} sequences")
        where = dict(zip(distinct, self._take(len(distinct))))
        ref = self._pool.ref
        host = self._host
        for seq in seqs:
            table = [where[block] for block in seq.table]
            held = self._held.setdefault(seq.owner, {})
            for block in table:
                ref[block] += 1
                held[block] = held.get(block, 0) + 1
            host.give(host.release(seq.table))
            seq.table = table
            seq.swapped = False
        return list(where.items())

    # -- queries -------------------------------------------------------------

    def __contains__(self, seq_id: Hashable) -> bool:
        """Whether the sequence is allocated (on the device or swapped out)."""
        return seq_id in self._seqs

    def block_table(self, seq_id: Hashable) -> list[int]:
        """The device block ids of a sequence, in token order (a copy)."""
        return self._on_device(seq_id, "read the block table of").table.copy()

    def sequence_info(self, seq_id: Hashable) -> dict:
        """A sequence as plain values: owner, tokens, swapped, table (host ids while swapped), shared."""
        seq = self._seqs.get(seq_id)
        if seq is None:
            raise self._unknown(seq_id, "describe")
        ref = self._host.ref if seq.swapped else self._pool.ref
        return {
            "owner": seq.owner,
            "num_tokens": seq.num_tokens,
            "swapped": seq.swapped,
            "table": seq.table.copy(),
            "shared": sum(1 for block in seq.table if ref[block] > 1),
        }

    def sequences(self, owner: Hashable | None = None) -> list[Hashable]:
        """Ids of all sequences, or of one owner's, in creation order."""
        return [seq_id for seq_id, seq in self._seqs.items() if owner is None or seq.owner == owner]

    def stats(self) -> dict:
        """The pool's memory map as plain values (blocks unless named otherwise).

        total = free + used; cached is the part of free that still holds a
        reusable prefix; shared counts used blocks held by more than one
        table; owners maps each owner to its usage; evictions counts cached
        blocks taken back since the pool was made.
        """
        return {
            "device": self.device,
            "layout": self.layout,
            "block_size": self.block_size,
            "total": self.num_blocks,
            "free": self.num_free_blocks,
            "used": self.num_used_blocks,
            "cached": self.num_cached_blocks,
            "shared": sum(1 for count in self._pool.ref if count > 1),
            "watermark": self.watermark_blocks,
            "sequences": sum(1 for seq in self._seqs.values() if not seq.swapped),
            "swapped": sum(1 for seq in self._seqs.values() if seq.swapped),
            "host_total": self._host.size,
            "host_free": self._host.num_free,
            "evictions": self.evictions,
            "owners": {owner: len(held) for owner, held in self._held.items() if held},
        }

    def block_map(self) -> dict:
        """Each block's owner and state, for pictures of the pool (a console's grid).

        `owners[i]`: the owner holding device block i (the first one found
        where several share it), or None. `marks[i]`: "." free, "c" cached
        (free, keeps a reusable prefix), "u" held by one table, "s" shared
        by several (copy-on-write or prefix sharing). `host[i]`: the owner of
        the swapped-out sequence in host block i, or None.
        """
        owners: list = [None] * self.num_blocks
        for owner, held in self._held.items():
            for block in held:
                if owners[block] is None:
                    owners[block] = owner
        cached = set(self._prefix.evictable())
        ref = self._pool.ref
        marks = "".join(
            ("s" if ref[b] > 1 else "u") if ref[b] else ("c" if b in cached else ".") for b in range(self.num_blocks)
        )
        host: list = [None] * self._host.size
        for seq in self._seqs.values():
            if seq.swapped:
                for block in seq.table:
                    host[block] = seq.owner
        return {"owners": owners, "marks": marks, "host": host}

    def owner_stats(self, owner: Hashable) -> dict:
        """One owner's share of the pool: blocks held, quota, shared blocks, sequences, host blocks."""
        held = self._held.get(owner, {})
        mine = [seq for seq in self._seqs.values() if seq.owner == owner]
        host_blocks = {block for seq in mine if seq.swapped for block in seq.table}
        return {
            "owner": owner,
            "blocks": len(held),
            "quota": self.quota(owner),
            "shared": sum(1 for block in held if self._pool.ref[block] > 1),
            "sequences": sum(1 for seq in mine if not seq.swapped),
            "swapped": sum(1 for seq in mine if seq.swapped),
            "host_blocks": len(host_blocks),
        }

    def snapshot(self) -> dict:
        """The complete state as plain values, for tests, debugging and determinism checks."""
        return {
            "sequences": {
                seq_id: {
                    "owner": seq.owner,
                    "num_tokens": seq.num_tokens,
                    "swapped": seq.swapped,
                    "table": seq.table.copy(),
                    "tail": None if seq.tail is None else seq.tail.copy(),
                    "last_hash": seq.last_hash,
                }
                for seq_id, seq in self._seqs.items()
            },
            "ref": self._pool.ref.copy(),
            "free": self._pool.free_ids(),
            "evictable": self._prefix.evictable(),
            "hashes": self._prefix.entries(),
            "host_ref": self._host.ref.copy(),
            "host_free": self._host.free_ids(),
            "held": {owner: dict(held) for owner, held in self._held.items()},
            "quotas": dict(self._quotas),
        }

    # -- internals -----------------------------------------------------------

    def _name(self) -> str:
        return f"KV pool {self.device}/{self.layout}"

    def _tokens(self, tokens: Tokens) -> tuple[list[int] | None, int]:
        """(token ids or None, count) from a count or a sequence of ids."""
        if isinstance(tokens, int):
            if tokens < 0:
                raise KVError(f"a token count must be >= 0, not {tokens}")
            return None, tokens
        ids = list(tokens)
        return ids, len(ids)

    def _unknown(self, seq_id: Hashable, action: str) -> KVUnknownSequence:
        if seq_id in self._freed:
            return KVDoubleFree(f"cannot {action} sequence {seq_id!r}: it was already freed in {self._name()}")
        return KVUnknownSequence(f"cannot {action} sequence {seq_id!r}: no such sequence in {self._name()}")

    def _on_device(self, seq_id: Hashable, action: str) -> _Seq:
        seq = self._seqs.get(seq_id)
        if seq is None:
            raise self._unknown(seq_id, action)
        if seq.swapped:
            raise KVSwapState(f"cannot {action} sequence {seq_id!r}: it is swapped out to the host; swap_in it first")
        return seq

    def _distinct_ids(self, seq_ids: Iterable[Hashable], action: str) -> list[Hashable]:
        ids = list(seq_ids)
        if len(set(ids)) != len(ids):
            raise KVError(f"cannot {action} the same sequence twice in one call: {ids!r}")
        return ids

    def _group(self, seq_ids: Iterable[Hashable], swapped: bool, action: str) -> list[_Seq]:
        """The sequences of a swap group, checked: all exist, none twice, all in the right place."""
        seqs = []
        for seq_id in self._distinct_ids(seq_ids, action):
            seq = self._seqs.get(seq_id)
            if seq is None:
                raise self._unknown(seq_id, action)
            if seq.swapped != swapped:
                where = "swapped out already" if seq.swapped else "on the device, not swapped out"
                raise KVSwapState(f"cannot {action} sequence {seq_id!r}: it is {where}")
            seqs.append(seq)
        return seqs

    def _hashes(self, ids: list[int] | None) -> list[int]:
        """Chain hashes of the full blocks of a prompt given as ids; none for a bare count."""
        return [] if ids is None else block_hashes(ids, self.block_size)

    def _prefix_plan(self, owner, size: int, hashes: list[int]) -> tuple[list[int], int, int]:
        """For a new sequence: (cached blocks its prompt reuses, how many of them are free, blocks new to owner).

        The reuse stops at the first block whose content is not cached.
        """
        hits = self.cached_prefix(hashes)
        return (hits, *self._hit_costs(owner, size, hits))

    def _hit_costs(self, owner, size: int, hits: list[int]) -> tuple[int, int]:
        """A new sequence of `size` blocks starting with `hits`: (hits that are free now, blocks new to owner)."""
        ref = self._pool.ref
        held = self._held.get(owner, {})
        return sum(1 for block in hits if not ref[block]), size - sum(1 for block in hits if block in held)

    def _admit(self, size: int, need: int, owners: dict) -> Admission:
        """Admission of a new occupant of `size` blocks taking `need` free ones.

        owners maps each owner to (blocks it would hold for this request, of
        which new to it).
        """
        if size > self.num_blocks - self.watermark_blocks:
            return Admission.NEVER
        for owner, (whole, _) in owners.items():
            quota = self.quota(owner)
            if quota is not None and whole > quota:
                return Admission.NEVER
        if self.num_free_blocks - need < self.watermark_blocks:
            return Admission.LATER
        for owner, (_, new) in owners.items():
            quota = self.quota(owner)
            if quota is not None and new and self.usage(owner) + new > quota:
                return Admission.LATER
        return Admission.OK

    def _check_room(self, need: int, per_owner: dict, action: str) -> None:
        """Raise unless `need` free blocks exist and each owner's growth fits its quota."""
        if need > self.num_free_blocks:
            raise KVOutOfBlocks(
                f"{action} needs {need} free blocks of {self.block_size} tokens but {self._name()} has "
                f"{self.num_free_blocks} (of {self.num_blocks}); free or swap out sequences, "
                "or ask can_allocate / can_append first"
            )
        for owner, extra in per_owner.items():
            quota = self.quota(owner)
            if quota is not None and extra and self.usage(owner) + extra > quota:
                raise KVQuotaExceeded(
                    f"{action}: owner {owner!r} holds {self.usage(owner)} blocks, needs {extra} more, and its "
                    f"quota is {quota}; free some of its sequences or raise its quota"
                )

    def _plan_step(self, steps) -> tuple[list, int, dict]:
        """Check a step and count its fresh blocks: (items, total, per owner), as append_many will do them."""
        block_size = self.block_size
        ref = self._pool.ref
        items = []
        seen = set()
        holders_left: dict[int, int] = {}  # shared partial block -> tables still on it during this step
        per_owner: dict = {}
        need = 0
        for seq_id, tokens in steps:
            seq = self._on_device(seq_id, "append to")
            if seq_id in seen:
                raise KVError(f"sequence {seq_id!r} appears twice in one step; pass its tokens in one entry")
            seen.add(seq_id)
            ids, n = self._tokens(tokens)
            items.append((seq, ids, n))
            if not n:
                continue
            old = seq.num_tokens
            grow = -(-(old + n) // block_size) - len(seq.table)
            if old % block_size:
                last = seq.table[-1]
                holders = holders_left.get(last, ref[last])
                if holders > 1:
                    grow += 1
                    holders_left[last] = holders - 1
            if grow:
                need += grow
                per_owner[seq.owner] = per_owner.get(seq.owner, 0) + grow
        return items, need, per_owner

    def _swap_in_need(self, seqs: list[_Seq]) -> tuple[list[int], dict]:
        """Distinct host blocks of a group, and how many each owner's sequences hold."""
        distinct = _distinct_blocks(seqs)
        per_owner: dict = {}
        for seq in seqs:
            per_owner.setdefault(seq.owner, set()).update(seq.table)
        return distinct, {owner: len(blocks) for owner, blocks in per_owner.items()}

    def _take(self, n: int) -> list[int]:
        """n fresh device blocks: plain free ones first, then evicted cached ones, oldest first."""
        pool = self._pool
        short = n - pool.num_free
        if short <= 0:
            return pool.take(n)
        blocks = pool.take(pool.num_free)
        evict = self._prefix.evict
        blocks.extend([evict() for _ in range(short)])
        self.evictions += short
        return blocks

    def _release(self, owner: Hashable, table: list[int]) -> int:
        """Drop one table's references; returns how many blocks became free."""
        _drop_held(self._held[owner], table)
        zeros = self._pool.release(table[::-1])
        self._pool.give(self._prefix.park(zeros))
        return len(zeros)

    def _hash_full_blocks(self, seq: _Seq, old_tokens: int, ids: list[int]) -> None:
        """After appending ids to a tracked sequence, name each block they filled."""
        tail = seq.tail + ids
        index = old_tokens // self.block_size
        block_hash = seq.last_hash
        start = 0
        while len(tail) - start >= self.block_size:
            block_hash = chain_hash(block_hash, tail[start : start + self.block_size])
            self._prefix.register(seq.table[index], block_hash)
            index += 1
            start += self.block_size
        seq.tail = tail[start:]
        seq.last_hash = block_hash


def _drop_held(held: dict[int, int], blocks: list[int]) -> None:
    """Drop one of an owner's references to each block, forgetting blocks it no longer holds."""
    for block in blocks:
        count = held[block]
        if count == 1:
            del held[block]
        else:
            held[block] = count - 1


def _distinct_blocks(seqs: list[_Seq]) -> list[int]:
    """Every block the tables of a group hold, once each, in order of first appearance."""
    return list(dict.fromkeys(block for seq in seqs for block in seq.table))
