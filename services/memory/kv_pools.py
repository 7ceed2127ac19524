"""All paged KV pools of a kernel: one `KVCache` per (device, model layout).

A model's layout fixes what one token's keys and values cost in bytes, so a
block of one model is not a block of another: each (device, layout) pair gets
its own pool, and a sequence lives in exactly one of them. This registry
finds the pool for a call, frees a process everywhere when it exits, and
gives the memory map of every pool (and of one process) in blocks and bytes.
"""

from collections.abc import Hashable
from dataclasses import dataclass

from .kv import KVCache
from .kv_errors import KVError, KVNoPool


@dataclass(frozen=True)
class KVLayout:
    """Shape of one model's KV cache: layers, KV heads, head size and element size."""

    name: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def bytes_per_token(self) -> int:
        """Bytes of keys plus values that one token occupies across all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def block_bytes(self, block_size: int) -> int:
        """Bytes of one block of `block_size` tokens."""
        return block_size * self.bytes_per_token

    def blocks_in(self, nbytes: int, block_size: int) -> int:
        """How many whole blocks fit in `nbytes` of device memory."""
        return nbytes // self.block_bytes(block_size)


class KVPools:
    """The KV pools of every device and layout, keyed by (device name, layout name)."""

    def __init__(self) -> None:
        """Start with no pool."""
        self._pools: dict[tuple[str, str], tuple[KVCache, KVLayout]] = {}

    def add(self, device: str, layout: KVLayout, num_blocks: int, **options) -> KVCache:
        """Create the pool of `layout` on `device` (options as for `KVCache`) and return it."""
        key = (device, layout.name)
        if key in self._pools:
            raise KVError(f"device {device} already has a KV pool for layout {layout.name}")
        pool = KVCache(num_blocks, device=device, layout=layout.name, **options)
        self._pools[key] = (pool, layout)
        return pool

    def get(self, device: str, layout_name: str) -> KVCache:
        """The pool of a layout on a device; raises KVNoPool naming the pools that exist."""
        entry = self._pools.get((device, layout_name))
        if entry is None:
            known = ", ".join(f"{d}/{n}" for d, n in self._pools) or "none"
            raise KVNoPool(f"no KV pool for layout {layout_name} on device {device} (pools: {known})")
        return entry[0]

    def remove(self, device: str, layout_name: str) -> None:
        """Forget a pool and all its sequences (its device went away)."""
        del self._pools[(device, layout_name)]

    def forget_owner(self, owner: Hashable) -> None:
        """Drop an owner's quota in every pool (after it exited and was freed)."""
        for pool, _ in self._pools.values():
            pool.forget_owner(owner)

    def free_owner(self, owner: Hashable) -> dict[str, list[Hashable]]:
        """Free every sequence of an owner in every pool; returns "device/layout" -> freed ids."""
        freed = {}
        for (device, name), (pool, _) in self._pools.items():
            ids = pool.free_owner(owner)
            if ids:
                freed[f"{device}/{name}"] = ids
        return freed

    def memory_map(self) -> list[dict]:
        """Each pool's `stats()` plus its block size in bytes and total/used/free bytes."""
        rows = []
        for pool, layout in self._pools.values():
            row = pool.stats()
            block_bytes = layout.block_bytes(pool.block_size)
            row["block_bytes"] = block_bytes
            for key in ("total", "used", "free"):
                row[f"{key}_bytes"] = row[key] * block_bytes
            rows.append(row)
        return rows

    def owner_map(self, owner: Hashable) -> list[dict]:
        """The owner's `owner_stats()` in each pool where it holds blocks or sequences, with bytes."""
        rows = []
        for pool, layout in self._pools.values():
            row = pool.owner_stats(owner)
            if row["blocks"] or row["sequences"] or row["swapped"]:
                row["device"] = pool.device
                row["layout"] = pool.layout
                row["bytes"] = row["blocks"] * layout.block_bytes(pool.block_size)
                rows.append(row)
        return rows
