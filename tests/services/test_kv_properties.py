"""Stateful property tests of the paged KV cache.

Hypothesis drives random allocate / fork / append / free / swap / quota calls
against two caches at once (the same calls, so they must end in the same
state) and checks after every call, from the public snapshot:
- every block is exactly one of plain free, cached (free, evictable) or used,
  so free + used == total; no block is on a free list twice or free and used;
- each reference count equals the number of device tables holding the block,
  and no table holds a block twice (the same for the host pool);
- each owner's usage is the set of blocks its tables hold, and no call grows
  an owner past its quota;
- forking takes no block; copy-on-write fires only on a shared partial last
  block; a step takes exactly `blocks_needed` blocks;
- prefix hits are what the content hashes predict, and eviction and release
  keep the cached list in least-recently-used order;
and at the end, once every process has freed everything, free == total.
"""

from collections import Counter

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from llmos.services.memory.admission import Admission
from llmos.services.memory.kv import KVCache
from llmos.services.memory.kv_errors import KVDoubleFree, KVError, KVOutOfBlocks, KVQuotaExceeded
from llmos.services.memory.prefix import block_hashes

BLOCK = 4
OWNERS = (1, 2, 3)
PREFIXES = ((), (1, 2, 3, 4), (1, 2, 3, 4, 5, 6, 7, 8), (9, 9, 9, 9))

owners = st.sampled_from(OWNERS)
picks = st.integers(min_value=0, max_value=1000)
prompts = st.builds(
    lambda head, tail: list(head) + tail, st.sampled_from(PREFIXES), st.lists(st.integers(0, 1), max_size=7)
)
counts = st.integers(min_value=0, max_value=14)


class KVMachine(RuleBasedStateMachine):
    """Two identical caches driven by the same calls; `a` is checked, `b` must match it."""

    def __init__(self):
        super().__init__()
        self.a = KVCache(16, BLOCK, host_blocks=8, watermark=0.1)
        self.b = KVCache(16, BLOCK, host_blocks=8, watermark=0.1)
        self.next_id = 0
        self.freed: list[int] = []
        self.prev = self.a.snapshot()

    # -- helpers -------------------------------------------------------------

    def both(self, call):
        """Apply `call` to both caches; both must return the same or raise the same error."""
        outcomes = []
        for kv in (self.a, self.b):
            try:
                outcomes.append(("ok", call(kv)))
            except KVError as error:
                outcomes.append((type(error), str(error)))
        assert outcomes[0] == outcomes[1]
        return outcomes[0]

    def pick(self, n: int, swapped: bool = False):
        ids = [s for s, seq in self.a.snapshot()["sequences"].items() if seq["swapped"] == swapped]
        return ids[n % len(ids)] if ids else None

    def subset(self, n: int, swapped: bool) -> list:
        ids = [s for s, seq in self.a.snapshot()["sequences"].items() if seq["swapped"] == swapped]
        return [s for i, s in enumerate(ids) if (n >> i) & 1]

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def expect_cache_order(self, before, after, revived=(), taken=0, released=()):
        """The cached (evictable) list after a call: hits leave it, fresh blocks evict its oldest, frees append."""
        order = [b for b in before["evictable"] if b not in revived]
        evicted = max(0, taken - len(before["free"]))
        if evicted:
            event("cached blocks evicted")
        assert after["evictable"] == order[evicted:] + list(released)

    def released_by(self, before, seq_ids) -> list[int]:
        """Blocks that become cached when these sequences leave the device, in eviction order."""
        ref = before["ref"].copy()
        out = []
        for seq_id in seq_ids:
            seq = before["sequences"][seq_id]
            if seq["swapped"]:
                continue
            for block in reversed(seq["table"]):
                ref[block] -= 1
                if not ref[block] and block in before["hashes"]:
                    out.append(block)
        return out

    # -- rules ---------------------------------------------------------------

    @rule(owner=owners, tokens=st.one_of(prompts, counts))
    def allocate(self, owner, tokens):
        before = self.a.snapshot()
        verdict = self.a.can_allocate(tokens, owner)
        seq_id = self.new_id()
        status, result = self.both(lambda kv: kv.allocate(seq_id, owner, tokens))
        after = self.a.snapshot()
        event(f"allocate: {status if status == 'ok' else status.__name__}")
        if verdict is Admission.OK:
            assert status == "ok"
        if status != "ok":
            assert status in (KVOutOfBlocks, KVQuotaExceeded) and verdict is not Admission.OK
            assert after == before
            return
        n = tokens if isinstance(tokens, int) else len(tokens)
        assert len(result) == self.a.blocks_for(n)
        hits = []
        if not isinstance(tokens, int):
            by_hash = {h: b for b, h in before["hashes"].items()}
            for h in block_hashes(tokens, BLOCK):
                if h not in by_hash:
                    break
                hits.append(by_hash[h])
        assert result[: len(hits)] == hits
        if hits:
            event("prefix hit")
        revived = [b for b in hits if b in before["evictable"]]
        self.expect_cache_order(before, after, revived=revived, taken=len(result) - len(hits))

    @rule(owner=owners, extra=st.integers(0, 2))
    def allocate_past_the_free_list(self, owner, extra):
        """A large prompt that needs every plain free block and then some cached ones."""
        self.allocate(owner, (len(self.a.snapshot()["free"]) + extra) * BLOCK)

    @rule(n=picks)
    def fork(self, n):
        parent = self.pick(n)
        if parent is not None:
            self.check_fork(parent)

    @rule(n=picks, tokens=st.integers(0, 2))
    def fork_then_append(self, n, tokens):
        """A beam-search step: a beam is forked and the new beam writes its next token."""
        parent = self.pick(n)
        if parent is not None:
            self.check_append(self.check_fork(parent), tokens)

    def check_fork(self, parent) -> int:
        before = self.a.snapshot()
        child = self.new_id()
        status, table = self.both(lambda kv: kv.fork(parent, child))
        after = self.a.snapshot()
        assert status == "ok" and table == before["sequences"][parent]["table"]
        assert after["free"] == before["free"] and after["evictable"] == before["evictable"]
        for block in table:
            assert after["ref"][block] == before["ref"][block] + 1
        return child

    @rule(n=picks, tokens=st.one_of(st.integers(0, 6), st.lists(st.integers(0, 1), max_size=6)))
    def append(self, n, tokens):
        seq_id = self.pick(n)
        if seq_id is not None:
            self.check_append(seq_id, tokens)

    def check_append(self, seq_id, tokens) -> None:
        before = self.a.snapshot()
        old = before["sequences"][seq_id]
        count = tokens if isinstance(tokens, int) else len(tokens)
        need = self.a.blocks_needed([(seq_id, tokens)])
        status, copies = self.both(lambda kv: kv.append(seq_id, tokens))
        after = self.a.snapshot()
        if status != "ok":
            assert after == before
            return
        shared_partial = count > 0 and old["num_tokens"] % BLOCK != 0 and before["ref"][old["table"][-1]] > 1
        new_table = after["sequences"][seq_id]["table"]
        if shared_partial:
            event("copy-on-write")
            assert copies == [(old["table"][-1], new_table[len(old["table"]) - 1])]
            assert new_table[: len(old["table"]) - 1] == old["table"][:-1]
        else:
            assert copies == []
            assert new_table[: len(old["table"])] == old["table"]
        assert len(before["free"]) + len(before["evictable"]) - len(after["free"]) - len(after["evictable"]) == need
        self.expect_cache_order(before, after, taken=need)

    @rule(n=picks, tokens=st.integers(1, 3))
    def step(self, n, tokens):
        steps = [(seq_id, tokens) for seq_id in self.subset(n, swapped=False)]
        before = self.a.snapshot()
        need = self.a.blocks_needed(steps)
        verdict = self.a.can_append(steps)
        status, copies = self.both(lambda kv: kv.append_many(steps))
        after = self.a.snapshot()
        assert (status == "ok") == (verdict is Admission.OK)
        event(f"step: {verdict.value}")
        if status != "ok":
            assert after == before
            return
        for src, _ in copies:
            holders = [s for s, _ in steps if before["sequences"][s]["table"][-1:] == [src]]
            assert holders and before["ref"][src] > 1
            assert before["sequences"][holders[0]]["num_tokens"] % BLOCK
        assert len(before["free"]) + len(before["evictable"]) - len(after["free"]) - len(after["evictable"]) == need
        self.expect_cache_order(before, after, taken=need)

    @rule(n=picks)
    def free(self, n):
        seq_id = self.pick(n) if n % 3 else self.pick(n, swapped=True)
        if seq_id is None:
            return
        before = self.a.snapshot()
        status, _ = self.both(lambda kv: kv.free(seq_id))
        assert status == "ok"
        self.expect_cache_order(before, self.a.snapshot(), released=self.released_by(before, [seq_id]))
        self.freed.append(seq_id)

    @precondition(lambda self: self.freed)
    @rule(n=picks)
    def double_free(self, n):
        seq_id = self.freed[n % len(self.freed)]
        assert seq_id not in self.a
        status, _ = self.both(lambda kv: kv.free(seq_id))
        assert status is KVDoubleFree

    @rule(owner=owners)
    def free_owner(self, owner):
        before = self.a.snapshot()
        ids = [s for s, seq in before["sequences"].items() if seq["owner"] == owner]
        status, freed = self.both(lambda kv: kv.free_owner(owner))
        assert status == "ok" and freed == ids
        self.expect_cache_order(before, self.a.snapshot(), released=self.released_by(before, ids))
        self.freed.extend(ids)

    @rule(n=picks)
    def swap_out(self, n):
        group = self.subset(n, swapped=False)
        before = self.a.snapshot()
        verdict = self.a.can_swap_out(group)
        status, copies = self.both(lambda kv: kv.swap_out(group))
        after = self.a.snapshot()
        assert (status == "ok") == (verdict is Admission.OK)
        event(f"swap out: {status if status == 'ok' else status.__name__}")
        if status != "ok":
            assert after == before
            return
        distinct = list(dict.fromkeys(b for s in group for b in before["sequences"][s]["table"]))
        assert [src for src, _ in copies] == distinct
        self.expect_cache_order(before, after, released=self.released_by(before, group))

    @rule(n=picks)
    def swap_in(self, n):
        group = self.subset(n, swapped=True)
        before = self.a.snapshot()
        verdict = self.a.can_swap_in(group)
        status, copies = self.both(lambda kv: kv.swap_in(group))
        after = self.a.snapshot()
        event(f"swap in: {verdict.value}, {status if status == 'ok' else status.__name__}")
        if verdict is Admission.OK:
            assert status == "ok"
        if status != "ok":
            assert after == before
            return
        self.expect_cache_order(before, after, taken=len(copies))

    @rule(owner=owners, blocks=st.one_of(st.none(), st.integers(0, 12)))
    def set_quota(self, owner, blocks):
        self.both(lambda kv: kv.set_quota(owner, blocks))

    # -- invariants ----------------------------------------------------------

    @invariant()
    def same_calls_same_state(self):
        assert self.a.snapshot() == self.b.snapshot()

    @invariant()
    def blocks_are_free_cached_or_used_exactly_once(self):
        snap = self.a.snapshot()
        free, cached = snap["free"], snap["evictable"]
        used = [b for b, count in enumerate(snap["ref"]) if count > 0]
        assert len(set(free)) == len(free) and len(set(cached)) == len(cached)
        assert sorted(free + cached + used) == list(range(self.a.num_blocks))
        assert all(snap["ref"][b] == 0 and b in snap["hashes"] for b in cached)
        stats = self.a.stats()
        assert stats["free"] + stats["used"] == stats["total"]
        assert stats["cached"] == len(cached) <= stats["free"]
        host_used = [b for b, count in enumerate(snap["host_ref"]) if count > 0]
        assert sorted(snap["host_free"] + host_used) == list(range(self.a.num_host_blocks))

    @invariant()
    def reference_counts_equal_holders(self):
        snap = self.a.snapshot()
        device, host = Counter(), Counter()
        for seq in snap["sequences"].values():
            assert len(set(seq["table"])) == len(seq["table"])
            assert len(seq["table"]) == self.a.blocks_for(seq["num_tokens"])
            (host if seq["swapped"] else device).update(seq["table"])
        assert [device[b] for b in range(self.a.num_blocks)] == snap["ref"]
        assert [host[b] for b in range(self.a.num_host_blocks)] == snap["host_ref"]

    @invariant()
    def partial_blocks_are_shared_within_one_owner(self):
        snap = self.a.snapshot()
        owners_of = {}
        for seq in snap["sequences"].values():
            if not seq["swapped"] and seq["num_tokens"] % BLOCK:
                owners_of.setdefault(seq["table"][-1], set()).add(seq["owner"])
        assert all(len(o) == 1 for o in owners_of.values())

    @invariant()
    def usage_is_held_blocks_and_never_grows_past_quota(self):
        snap = self.a.snapshot()
        for owner in OWNERS:
            held = Counter()
            for seq in snap["sequences"].values():
                if seq["owner"] == owner and not seq["swapped"]:
                    held.update(seq["table"])
            assert snap["held"].get(owner, {}) == dict(held)
            quota = self.a.quota(owner)
            usage = self.a.usage(owner)
            if quota is not None and usage > quota:
                assert usage <= len(self.prev["held"].get(owner, {}))
        self.prev = snap

    def teardown(self):
        for owner in OWNERS:
            self.both(lambda kv: kv.free_owner(owner))
        stats = self.a.stats()
        assert stats["free"] == stats["total"] and stats["used"] == 0
        assert stats["host_free"] == stats["host_total"] and stats["owners"] == {}


KVMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestKVCache = KVMachine.TestCase
