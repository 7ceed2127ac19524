"""Unit tests of the paged KV cache: tables, sharing, prefix caching, swap, admission, quotas, errors."""

import argparse

import pytest

from llmos.benchmarks import memory as bench
from llmos.services.memory.admission import Admission
from llmos.services.memory.kv import KVCache
from llmos.services.memory.kv_errors import (
    KVDoubleFree,
    KVError,
    KVNoPool,
    KVOutOfBlocks,
    KVOutOfHostBlocks,
    KVQuotaExceeded,
    KVSequenceExists,
    KVSwapState,
    KVUnknownSequence,
)
from llmos.services.memory.kv_pools import KVLayout, KVPools


def make(num_blocks=16, block_size=4, **options) -> KVCache:
    """A small pool with 4-token blocks and no watermark unless asked."""
    options.setdefault("watermark", 0)
    return KVCache(num_blocks, block_size, **options)


# -- tables and counts --------------------------------------------------------


def test_allocate_gives_a_table_of_ceil_tokens_over_block_size():
    kv = make()
    assert kv.allocate("a", 1, 9) == [0, 1, 2]
    assert kv.allocate("b", 1, 8) == [3, 4]
    assert kv.allocate("c", 1, 0) == []
    assert kv.stats()["used"] == 5 and kv.stats()["free"] == 11
    assert kv.sequence_info("a") == {"owner": 1, "num_tokens": 9, "swapped": False, "table": [0, 1, 2], "shared": 0}


def test_append_fills_the_last_block_before_taking_a_new_one():
    kv = make()
    kv.allocate("a", 1, 3)
    assert kv.append("a") == [] and kv.block_table("a") == [0]
    kv.append("a", 1)
    assert kv.block_table("a") == [0, 1]
    kv.append("a", 7)
    assert kv.block_table("a") == [0, 1, 2] and kv.sequence_info("a")["num_tokens"] == 12


def test_free_returns_blocks_and_reports_how_many():
    kv = make()
    kv.allocate("a", 1, 9)
    assert kv.free("a") == 3
    assert kv.stats()["free"] == 16 and "a" not in kv


def test_fresh_blocks_are_the_lowest_free_ids_whatever_order_they_were_freed_in():
    kv = make()
    kv.allocate("a", 1, 4)
    kv.allocate("b", 1, 4)
    for _ in range(3):  # two sequences growing step by step take interleaved blocks
        kv.append_many([("a", 4), ("b", 4)])
    assert kv.block_table("a") == [0, 2, 4, 6] and kv.block_table("b") == [1, 3, 5, 7]
    kv.free("a")
    kv.free("b")  # freed last: a stack would hand its scattered blocks out first
    kv.allocate("c", 1, 4)
    for _ in range(5):
        kv.append("c", 4)
    assert kv.block_table("c") == [0, 1, 2, 3, 4, 5]  # consecutive: the model step reads it as one slice
    kv.allocate("d", 1, 8)
    kv.free("c")
    assert kv.allocate("e", 1, 12) == [0, 1, 2]  # a hole below the used blocks is filled first
    assert kv.snapshot()["free"] == [3, 4, 5] + list(range(8, 16))
    assert kv.allocate("f", 1, 16) == [3, 4, 5, 8]  # around the used ones, still lowest first


# -- fork and copy-on-write ---------------------------------------------------


def test_fork_allocates_nothing_and_shares_every_block():
    kv = make()
    kv.allocate("p", 1, 6)
    free = kv.num_free_blocks
    assert kv.fork("p", "c") == [0, 1]
    assert kv.num_free_blocks == free
    assert kv.stats()["shared"] == 2
    assert kv.sequence_info("c")["shared"] == 2


def test_append_into_a_shared_partial_block_copies_only_that_block():
    kv = make()
    kv.allocate("p", 1, 6)  # blocks 0 (full) and 1 (2 of 4 tokens)
    kv.fork("p", "c")
    assert kv.append("c") == [(1, 2)]
    assert kv.block_table("c") == [0, 2] and kv.block_table("p") == [0, 1]
    assert kv.append("p") == []  # p is now the only holder of block 1: it writes in place
    assert kv.snapshot()["ref"][:3] == [2, 1, 1]


def test_no_copy_when_the_shared_last_block_is_full():
    kv = make()
    kv.allocate("p", 1, 8)
    kv.fork("p", "c")
    assert kv.append("c") == []
    assert kv.block_table("c") == [0, 1, 2] and kv.block_table("p") == [0, 1]


def test_when_every_holder_appends_in_one_step_the_last_one_writes_in_place():
    kv = make()
    kv.allocate("p", 1, 2)
    kv.fork("p", "c1")
    kv.fork("p", "c2")
    steps = [("p", 1), ("c1", 1), ("c2", 1)]
    assert kv.blocks_needed(steps) == 2
    assert kv.append_many(steps) == [(0, 1), (0, 2)]
    assert [kv.block_table(s) for s in ("p", "c1", "c2")] == [[1], [2], [0]]


# -- prefix caching -----------------------------------------------------------


def test_a_matching_prompt_prefix_reuses_cached_full_blocks_only():
    kv = make()
    kv.allocate("a", 1, [1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert kv.allocate("b", 2, [1, 2, 3, 4, 5, 6, 7, 8, 9]) == [0, 1, 3]  # partial block 2 is not shared
    assert kv.allocate("c", 2, [1, 2, 3, 4, 0, 6, 7, 8]) == [0, 4]  # diverges in block 1
    assert kv.stats()["owners"] == {1: 3, 2: 4}


def test_a_cached_prefix_survives_free_and_counts_as_free():
    kv = make()
    kv.allocate("a", 1, list(range(8)))
    kv.free("a")
    stats = kv.stats()
    assert stats["free"] == 16 and stats["cached"] == 2 and stats["used"] == 0
    assert kv.allocate("b", 1, list(range(8)) + [99]) == [0, 1, 2]
    assert kv.stats()["cached"] == 0


def test_eviction_is_least_recently_freed_first_and_tail_blocks_go_before_their_prefix():
    kv = make(num_blocks=4)
    kv.allocate("a", 1, [1] * 8)  # blocks 0, 1
    kv.allocate("b", 1, [2] * 8)  # blocks 2, 3
    kv.free("a")
    kv.free("b")
    assert kv.snapshot()["evictable"] == [1, 0, 3, 2]
    assert kv.allocate("c", 1, 4) == [1]  # the oldest: a's tail block
    assert kv.allocate("d", 1, [1] * 4) == [0]  # a's first block is still cached: a hit
    assert kv.snapshot()["evictable"] == [3, 2]


def test_blocks_filled_by_appended_ids_become_cached():
    kv = make()
    kv.allocate("a", 1, [7, 7])
    kv.append("a", [7, 7, 8])
    assert kv.allocate("b", 1, [7, 7, 7, 7, 9]) == [0, 2]


def test_appending_a_count_stops_prefix_caching_for_that_sequence():
    kv = make()
    kv.allocate("a", 1, [7, 7])
    kv.append("a", 2)
    assert kv.allocate("b", 1, [7, 7, 7, 7]) == [1]
    assert kv.snapshot()["sequences"]["a"]["tail"] is None


def test_can_allocate_counts_a_hit_on_a_block_in_use_as_free():
    kv = make(num_blocks=3)
    kv.allocate("a", 1, [5] * 8)
    assert kv.can_allocate([5] * 8 + [6]) is Admission.OK  # needs one fresh block, one is free
    assert kv.can_allocate(9) is Admission.LATER


# -- swap ---------------------------------------------------------------------


def test_swap_out_and_in_keeps_sharing_and_reports_the_copies():
    kv = make(host_blocks=4)
    kv.allocate("p", 1, 6)
    kv.fork("p", "c")
    assert kv.swap_out(["p", "c"]) == [(0, 0), (1, 1)]
    assert kv.stats()["free"] == 16 and kv.num_free_host_blocks == 2
    assert kv.sequence_info("c") == {"owner": 1, "num_tokens": 6, "swapped": True, "table": [0, 1], "shared": 2}
    kv.allocate("x", 2, 4)  # takes block 0
    assert kv.swap_in(["p", "c"]) == [(0, 1), (1, 2)]
    assert kv.block_table("p") == kv.block_table("c") == [1, 2]
    assert kv.num_free_host_blocks == 4
    assert kv.append("c") == [(2, 3)]  # still copy-on-write after the round trip


def test_block_map_draws_owners_sharing_cached_and_swapped_blocks():
    kv = make(num_blocks=8, host_blocks=4)
    kv.allocate("a", 1, list(range(8)))  # blocks 0, 1: full, hashed
    kv.free("a")  # ... now cached
    kv.allocate("b", 2, [9] * 6)  # blocks 2, 3
    kv.fork("b", "b2")  # shared
    kv.allocate("s", 3, 5)  # blocks 4, 5
    kv.swap_out(["s"])  # to host blocks 0, 1
    kv.allocate("c", 1, 3)  # block 4 again
    picture = kv.block_map()
    assert picture["marks"] == "ccssu..."  # cached, cached, shared, shared, used, free x3
    assert picture["owners"] == [None, None, 2, 2, 1, None, None, None]
    assert picture["host"] == [3, 3, None, None]


def test_swap_needs_host_room_and_the_right_state():
    kv = make(host_blocks=1)
    kv.allocate("a", 1, 8)
    assert kv.can_swap_out(["a"]) is Admission.NEVER
    with pytest.raises(KVOutOfHostBlocks, match="needs 2 host blocks"):
        kv.swap_out(["a"])
    with pytest.raises(KVSwapState, match="on the device"):
        kv.swap_in(["a"])
    kv.allocate("b", 1, 1)
    kv.allocate("c", 1, 1)
    assert kv.can_swap_out(["b"]) is Admission.OK
    kv.swap_out(["b"])
    assert kv.can_swap_out(["c"]) is Admission.LATER
    with pytest.raises(KVSwapState, match="swap_in it first"):
        kv.append("b")
    with pytest.raises(KVSwapState):
        kv.block_table("b")
    assert kv.free("b") == 0 and kv.num_free_host_blocks == 1


# -- admission, watermark, quotas -----------------------------------------------


def test_watermark_keeps_blocks_for_growth():
    kv = KVCache(10, 4, watermark=0.2)  # 2 blocks kept free
    assert kv.can_allocate(36) is Admission.NEVER  # 9 blocks > 10 - 2
    assert kv.can_allocate(32) is Admission.OK
    kv.allocate("a", 1, 28)  # 7 blocks, 3 free
    assert kv.can_allocate(4) is Admission.OK  # leaves exactly 2
    assert kv.can_allocate(8) is Admission.LATER
    kv.append("a", 12)  # growth may dig into the watermark
    assert kv.num_free_blocks == 0


def test_quota_never_later_and_refusal():
    kv = make(host_blocks=8)
    kv.set_quota(1, 3)
    assert kv.can_allocate(16, owner=1) is Admission.NEVER
    kv.allocate("a", 1, 8)
    assert kv.can_allocate(8, owner=1) is Admission.LATER
    assert kv.can_allocate(8, owner=2) is Admission.OK
    with pytest.raises(KVQuotaExceeded, match="holds 2 blocks, needs 2 more, and its quota is 3"):
        kv.allocate("b", 1, 8)
    kv.append("a", 4)
    assert kv.can_append([("a", 1)]) is Admission.NEVER  # 4 blocks > quota 3 on its own
    with pytest.raises(KVQuotaExceeded):
        kv.append("a", 1)
    kv.swap_out(["a"])
    kv.allocate("c", 1, 4)
    assert kv.can_swap_in(["a"]) is Admission.LATER
    with pytest.raises(KVQuotaExceeded):
        kv.swap_in(["a"])


def test_a_fork_never_costs_quota_and_a_copy_does():
    kv = make()
    kv.set_quota(1, 2)
    kv.allocate("p", 1, 6)
    kv.fork("p", "c")
    assert kv.usage(1) == 2
    assert kv.can_append([("c", 1)]) is Admission.LATER
    with pytest.raises(KVQuotaExceeded):
        kv.append("c")


def test_lowering_a_quota_below_usage_stops_growth_only():
    kv = make()
    kv.allocate("a", 1, 8)
    kv.set_quota(1, 1)
    assert kv.usage(1) == 2
    with pytest.raises(KVQuotaExceeded):
        kv.append("a")
    kv.set_quota(1, None)
    kv.append("a")


def test_default_quota_applies_until_set_and_after_unset():
    kv = make(default_quota=2)
    assert kv.quota(1) == 2 and kv.can_allocate(12, owner=1) is Admission.NEVER
    kv.set_quota(1, 5)
    assert kv.can_allocate(12, owner=1) is Admission.OK
    kv.set_quota(1, None)
    assert kv.quota(1) == 2
    with pytest.raises(KVError, match=">= 0"):
        kv.set_quota(1, -1)


def test_can_append_says_later_when_the_pool_is_short():
    kv = make(num_blocks=2)
    kv.allocate("a", 1, 4)
    kv.allocate("b", 1, 4)
    assert kv.can_append([("a", 1)]) is Admission.LATER
    assert kv.can_append([("a", 9)]) is Admission.NEVER


def test_a_failed_step_changes_nothing():
    kv = make(num_blocks=3)
    kv.allocate("a", 1, 4)
    kv.allocate("b", 1, 3)
    before = kv.snapshot()
    with pytest.raises(KVOutOfBlocks, match="needs 2 free blocks"):
        kv.append_many([("b", 1), ("a", 5)])
    assert kv.snapshot() == before


# -- owners, stats, errors ---------------------------------------------------


def test_free_owner_frees_all_of_one_process_including_swapped():
    kv = make(host_blocks=4)
    kv.allocate("a", 1, 5)
    kv.fork("a", "a2")
    kv.allocate("b", 2, 4)
    kv.allocate("c", 1, 3)
    kv.swap_out(["c"])
    assert kv.free_owner(1) == ["a", "a2", "c"]
    assert kv.sequences() == ["b"] and kv.num_free_host_blocks == 4
    assert kv.stats()["owners"] == {2: 1}
    kv.set_quota(1, 5)
    kv.forget_owner(1)
    assert kv.quota(1) is None
    with pytest.raises(KVError, match="free_owner"):
        kv.forget_owner(2)


def test_owner_stats_and_stats():
    kv = make(host_blocks=4)
    kv.set_quota(1, 10)
    kv.allocate("a", 1, [1, 2, 3, 4, 5])
    kv.fork("a", "b")
    kv.allocate("c", 2, [1, 2, 3, 4])
    kv.allocate("d", 1, 4)
    kv.swap_out(["d"])
    assert kv.owner_stats(1) == {
        "owner": 1, "blocks": 2, "quota": 10, "shared": 2, "sequences": 2, "swapped": 1, "host_blocks": 1,
    }
    stats = kv.stats()
    assert (stats["total"], stats["used"], stats["free"], stats["shared"]) == (16, 2, 14, 2)
    assert (stats["sequences"], stats["swapped"], stats["host_free"]) == (3, 1, 3)
    assert stats["owners"] == {1: 2, 2: 1}


def test_misuse_raises_typed_errors_with_errno():
    kv = make()
    kv.allocate("a", 1, 4)
    with pytest.raises(KVSequenceExists, match="already exists"):
        kv.allocate("a", 1, 4)
    with pytest.raises(KVSequenceExists):
        kv.fork("a", "a")
    with pytest.raises(KVUnknownSequence, match="no such sequence") as unknown:
        kv.fork("zz", "b")
    assert unknown.value.errno == "EBADF"
    kv.free("a")
    with pytest.raises(KVDoubleFree, match="already freed"):
        kv.free("a")
    with pytest.raises(KVError, match=">= 0"):
        kv.allocate("n", 1, -1)
    kv.allocate("b", 1, 1)
    with pytest.raises(KVError, match="twice in one step"):
        kv.append_many([("b", 1), ("b", 1)])
    with pytest.raises(KVOutOfBlocks) as short:
        kv.allocate("big", 1, 100)
    assert short.value.errno == "ENOMEM" and isinstance(short.value, MemoryError)
    with pytest.raises(KVUnknownSequence):
        kv.free_many(["b", "nope"])
    assert "b" in kv  # all or nothing


# -- the registry of pools ----------------------------------------------------


def test_pools_per_device_and_layout_with_bytes():
    layout = KVLayout("tiny", num_layers=2, num_kv_heads=4, head_dim=8, dtype_bytes=2)
    assert layout.bytes_per_token == 256 and layout.block_bytes(16) == 4096
    assert layout.blocks_in(10_000, 16) == 2
    pools = KVPools()
    gpu = pools.add("cuda:0", layout, 8)
    cpu = pools.add("cpu", layout, 4)
    with pytest.raises(KVError, match="already has"):
        pools.add("cpu", layout, 4)
    assert pools.get("cuda:0", "tiny") is gpu
    with pytest.raises(KVNoPool, match="pools: cuda:0/tiny, cpu/tiny"):
        pools.get("tpu", "tiny")
    gpu.allocate(1, 7, 20)
    cpu.allocate(1, 7, 5)
    assert [row["used_bytes"] for row in pools.memory_map()] == [2 * 4096, 4096]
    assert [(row["device"], row["blocks"], row["bytes"]) for row in pools.owner_map(7)] == [
        ("cuda:0", 2, 8192), ("cpu", 1, 4096)
    ]
    assert pools.free_owner(7) == {"cuda:0/tiny": [1], "cpu/tiny": [1]}
    assert pools.owner_map(7) == []


# -- the benchmark ------------------------------------------------------------


def test_benchmark_runs_a_small_workload_and_reports_every_figure():
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(
        ["--sequences", "60", "--concurrency", "16", "--beam-requests", "5", "--ops-seconds", "0.01"]
    )
    result = bench.run(args)
    assert result["seed"] == 0 and result["block_size"] == 16 and result["sequences"] == 60
    assert 0 <= result["paged_waste_pct"] < 10 < result["contiguous_useful_pct"] < 100
    assert result["block_ops_per_s"] > 0 and result["block_ops"] % 2 == 0
    assert 0 < result["beam_sharing_saving_pct"] < 100
    assert bench.run(args)["paged_waste_pct"] == result["paged_waste_pct"]  # seeded
    assert "block allocations + frees per second" in bench.report(result)
