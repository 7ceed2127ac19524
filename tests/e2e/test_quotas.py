"""Quotas hold: KV pools are charged to their creators, children fit in their parents, nobody is charged
for memory it never asked for, and waiting allocations do not block each other (one kernel with a 64 MiB quota)."""

import asyncio

import psutil
import pytest

from llmos.syscalls import Errno
from llmos.userland import AsyncClient, Client, LlmosError

from conftest import start_kernel, until

QUOTA = 64 << 20
LAYOUT = dict(layers=2, kv_heads=2, head_dim=8)  # 2 KiB blocks of 16 tokens


@pytest.fixture(scope="module")
def qkernel(runtime_dir):
    kp = start_kernel(runtime_dir, "quotas", default_quota=QUOTA, max_children=2)
    yield kp
    assert kp.stop() == 0


def cpu_map(c: Client):
    (cpu,) = c.memstat()
    return cpu


def test_a_kv_pool_is_charged_to_its_creator_within_its_quota_and_freed_after_it(qkernel):
    with Client(qkernel.address, name="user") as user:
        before = cpu_map(user).used
        with Client(qkernel.address, name="creator") as creator:
            with pytest.raises(LlmosError) as err:  # 256 MiB of KV under a 64 MiB quota
                creator.kv_pool("cpu", **LAYOUT, blocks=128 << 10)
            assert err.value.errno == Errno.ENOMEM and f"quota {QUOTA}" in err.value.message
            pool = creator.kv_pool("cpu", **LAYOUT, blocks=64)
            nbytes = 64 * pool.block_bytes
            cpu = cpu_map(creator)
            assert cpu.by_process[creator.pid] == nbytes and 0 not in cpu.by_process
            seq = user.kv_alloc("cpu", pool.pool, 40)
        cpu = cpu_map(user)  # the creator left; the user's sequence keeps the pool, held by the kernel
        assert cpu.by_process.get(0) == nbytes and user.pid not in cpu.by_process
        assert user.kv_table(seq.seq).num_tokens == 40
        user.kv_free(seq.seq)  # no holder left: the pool goes
        cpu = cpu_map(user)
        assert cpu.used == before and pool.pool not in [p.pool for p in cpu.kv_pools]
        with Client(qkernel.address, name="lone") as lone:
            lone.kv_pool("cpu", **LAYOUT, blocks=8)
        until(lambda: cpu_map(user).used == before)  # a pool nobody uses goes with its creator


def test_a_childs_quota_nests_in_its_parents(qkernel):
    with Client(qkernel.address, name="parent") as parent:
        with pytest.raises(LlmosError) as err:  # 8 GiB for a child of a 64 MiB parent
            parent.spawn("hold", ["1"], quotas={"cpu0": 8 << 30})
        assert err.value.errno == Errno.EPERM and f"parent's ({QUOTA})" in err.value.message
        with pytest.raises(LlmosError) as err:
            parent.spawn("hold", ["1"], kv_quota=-1)
        assert err.value.errno == Errno.EINVAL
        out = []
        child = parent.spawn("nest", ["{}", '{"cpu0": 33554432}', '{"cpu0": 4194304}'], quotas={"cpu0": 16 << 20})
        parent.wait(child.pid, on_output=out.append)
        assert "".join(out).split() == [str(16 << 20), "EPERM", "4194304"]  # its children: 16 MiB by default, at most


def test_the_live_children_of_a_process_are_bounded(qkernel):
    with Client(qkernel.address, name="parent") as parent:
        kids = [parent.spawn("hold", ["1"]).pid for _ in range(2)]
        with pytest.raises(LlmosError) as err:
            parent.spawn("hold", ["1"])
        assert err.value.errno == Errno.EAGAIN and "2 live children" in err.value.message
        parent.kill(kids[0], 9)
        parent.wait(kids[0])
        kids[0] = parent.spawn("hold", ["1"]).pid  # one ended: room for another
        for pid in kids:
            parent.kill(pid, 9)


def test_a_process_is_never_charged_for_memory_it_did_not_allocate(qkernel):
    with Client(qkernel.address, name="receiver") as receiver:
        mine = receiver.alloc("cpu", [32 << 20], "uint8")
        with Client(qkernel.address, name="giver") as giver:
            gift = giver.alloc("cpu", [48 << 20], "uint8")
            theirs = giver.share(gift.handle, receiver.pid)
            rows = {row.handle: row for row in receiver.handles()}
            assert rows[theirs].charged == giver.pid and rows[theirs].holders == 2
        # the giver left: the kernel holds the gift's charge, the receiver still only its own 32 MiB
        cpu = cpu_map(receiver)
        assert cpu.by_process[receiver.pid] == 32 << 20 and cpu.by_process[0] == 48 << 20
        more = receiver.alloc("cpu", [16 << 20], "uint8")  # within its own quota
        rows = receiver.handles()
        assert [(r.handle, r.kind, r.nbytes, r.charged, r.holders) for r in rows] == [
            (mine.handle, "tensor", 32 << 20, receiver.pid, 1),
            (theirs, "tensor", 48 << 20, 0, 1),
            (more.handle, "tensor", 16 << 20, receiver.pid, 1),
        ]
        assert rows[0].shape == [32 << 20] and rows[0].dtype == "uint8"
        receiver.free(theirs)
        assert 0 not in cpu_map(receiver).by_process


def test_handles_lists_models_and_kv_sequences_too(qkernel):
    with Client(qkernel.address, name="lister") as c:
        assert c.handles() == []
        pool = c.kv_pool("cpu", **LAYOUT, blocks=4)
        seq = c.kv_alloc("cpu", pool.pool, 3)
        model = c.model_load("cpu", "tinygpt", config=dict(d_model=16, n_layers=1, n_heads=2, max_len=16), kv_blocks=2)
        rows = {row.handle: row for row in c.handles()}
        assert (rows[seq.seq].kind, rows[seq.seq].pool, rows[seq.seq].charged) == ("kv", pool.pool, c.pid)
        assert (rows[model.model].kind, rows[model.model].nbytes, rows[model.model].charged) == ("model", model.bytes, c.pid)
        c.kv_free(seq.seq)
        c.model_free(model.model)
        assert c.handles() == []


def test_a_waiter_that_only_its_own_free_can_help_does_not_block_others(qkernel):
    async def scenario() -> None:
        async with AsyncClient(qkernel.address, name="blocker") as a, AsyncClient(qkernel.address, name="other") as b:
            full = await a.alloc("cpu", [QUOTA], "uint8")  # a's quota is full
            allocs = (await b.stat()).by_syscall["alloc"]
            mine = asyncio.ensure_future(a.alloc("cpu", [1 << 20], "uint8", wait=True))  # only a's own free can help it
            while (await b.stat()).by_syscall["alloc"] == allocs:  # until the kernel has parked it
                await asyncio.sleep(0.01)
            try:
                theirs = await asyncio.wait_for(b.alloc("cpu", [1 << 20], "uint8", wait=True), 10)
            except asyncio.TimeoutError:
                raise AssertionError("a waiter blocked by its own quota held back another process's allocation") from None
            assert theirs.nbytes == 1 << 20 and not mine.done()
            await a.free(full.handle)
            assert (await asyncio.wait_for(mine, 10)).nbytes == 1 << 20

    asyncio.run(scenario())


def peak_rss(c: Client) -> int:
    """The cpu driver host's peak resident memory so far (VmHWM), in bytes."""
    with open(f"/proc/{c.device('cpu0').driver_os_pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM:"))


def test_model_load_admits_before_the_driver_builds_anything(qkernel):
    with Client(qkernel.address, name="loader") as c:
        before, peak = cpu_map(c).used, peak_rss(c)
        big = dict(d_model=512, n_layers=20, n_heads=8, max_len=64)  # 64 M parameters: 256 MiB of float32 weights
        for config, kv_blocks in [(big, 1), ({}, 10**9)]:  # the second: 16 TB of KV storage
            with pytest.raises(LlmosError) as err:
                c.model_load("cpu", "tinygpt", config=config, kv_blocks=kv_blocks)
            assert peak_rss(c) - peak < 32 << 20  # the driver never built it
            assert err.value.errno == Errno.ENOMEM and f"quota {QUOTA}" in err.value.message
        assert cpu_map(c).used == before and c.pid not in cpu_map(c).by_process
        for config in [{"d_model": "wide"}, {"no_such_field": 1}, {"d_model": 30, "n_heads": 4}]:
            with pytest.raises(LlmosError) as err:
                c.model_load("cpu", "tinygpt", config=config)
            assert err.value.errno == Errno.EINVAL, config
        small = c.model_load("cpu", "tinygpt", config=dict(d_model=16, n_layers=1, n_heads=2, max_len=16), kv_blocks=2)
        assert cpu_map(c).by_process[c.pid] == small.bytes
        c.model_free(small.model)
        assert psutil.pid_exists(c.device("cpu0").driver_os_pid)
