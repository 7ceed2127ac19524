"""`llmos sim lifecycle` keeps the kernel's books: the same events on the simulator's World and on a live kernel
leave the same handles, charges, KV blocks, process states and wait reports.

The simulator mirrors `Kernel.reclaim`, `release_ref` and `reap` rather than
calling them, so these tests are where the two would be seen to drift.
"""

import pytest

from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError
from llmos.kernel.proc import KERNEL_PID
from llmos.userland.labsim.procworld import Refused, World

from conftest import until

KIB = 1024
LAYOUT = dict(layers=1, kv_heads=1, head_dim=3, block_size=4)  # a pool no other test makes


def cpu0(c: Client):
    """cpu0's memory map."""
    return next(d for d in c.memstat() if d.device == "cpu0")


def world(c: Client) -> World:
    """A World whose cpu0 is the live one's size, with a KV pool like the one `pool` makes."""
    return World(cpu0(c).capacity, blocks=12, block_size=LAYOUT["block_size"])


def sim_handles(w: World, pid: int, live: dict[int, int]) -> list[tuple]:
    """A simulated process's handles as (handle, kind, bytes, charged pid), with pids as the live kernel's."""
    proc = w.procs.by_pid[pid]
    rows = [(h, "kv", 0, None) for h in proc.kvseqs]
    for handle, tid in proc.handles.items():
        t = w.tensors.by_tid[tid]
        rows.append((handle, "tensor", t.nbytes, live[t.owner]))
    return sorted(rows)


def live_handles(c: Client) -> list[tuple]:
    """The same, from the live kernel (a KV sequence's charge is its pool's, which the simulator leaves out)."""
    return sorted((h.handle, h.kind, h.nbytes, None if h.kind == "kv" else h.charged) for h in c.handles())


def errno_of(call) -> str:
    """The errno's name of a call that must fail, live (LlmosError) or simulated (Refused)."""
    with pytest.raises((LlmosError, Refused)) as err:
        call()
    return err.value.errno if isinstance(err.value, Refused) else err.value.errno.name


def test_a_shared_tensor_outlives_its_allocator_and_the_kernel_pays(kernel, client):
    import torch

    w = world(client)
    pool = client.kv_pool("cpu0", **LAYOUT, blocks=12).pool
    with Client(kernel.address, name="other") as other:
        live = {1: client.pid, 2: other.pid, KERNEL_PID: KERNEL_PID}
        w.spawn(1)  # attached live, a child here: sharing and ends do not depend on who the parent is
        kernel_before = cpu0(client).by_process.get(KERNEL_PID, 0)
        assert client.put(torch.zeros(64 * KIB), "cpu0").handle == w.alloc(1, 256 * KIB)
        assert other.put(torch.zeros(128 * KIB), "cpu0").handle == w.alloc(2, 512 * KIB)
        assert other.kv_alloc("cpu0", pool, 5).seq == w.kv_alloc(2, 5)  # tensors and KV share one numbering
        assert other.share(1, client.pid) == w.share(2, 1, 1)
        assert client.share(1, other.pid) == w.share(1, 1, 2)
        blocks = next(p for p in cpu0(client).kv_pools if p.pool == pool).by_process
        assert blocks[other.pid] == w.kv.usage(2) == 2
        assert live_handles(other) == sim_handles(w, 2, live)
        other.exit()
        w.exit(2, 0)
    assert live_handles(client) == sim_handles(w, 1, live)  # other's tensor: charged to the kernel now
    mem = cpu0(client)
    assert other.pid not in mem.by_process and w.memory.by_owner.get(2, 0) == 0
    assert mem.by_process.get(KERNEL_PID, 0) - kernel_before == w.memory.by_owner[KERNEL_PID] == 512 * KIB
    assert next(p for p in mem.kv_pools if p.pool == pool).free == w.kv.num_free_blocks == 12
    client.free(2)
    assert w.free(1, 2)  # the last holder lets go: freed
    assert cpu0(client).by_process.get(KERNEL_PID, 0) == kernel_before and KERNEL_PID not in w.memory.by_owner


def test_a_killed_child_gives_its_memory_back_and_is_a_zombie_until_waited(client):
    w = world(client)
    too_big = w.memory.capacity + 1  # quotas nest: a child's is at most its parent's
    assert errno_of(lambda: client.spawn("hold", quotas={"cpu0": too_big})) == errno_of(
        lambda: w.spawn(1, quota=too_big)) == "EPERM"
    child = client.spawn("hold", ["1"], quotas={"cpu0": 2 << 20})
    assert w.spawn(1, quota=2 << 20) == 2
    w.alloc(2, 1 << 20)  # what hold does
    until(lambda: cpu0(client).by_process.get(child.pid) == w.memory.by_owner[2])
    assert errno_of(lambda: client.wait(child.pid, timeout_s=0)) == errno_of(lambda: w.wait(1, 2)) == "ETIMEDOUT"
    client.kill(child.pid)
    w.kill(1, 2)
    row = next(p for p in client.ps() if p.pid == child.pid)
    assert row.state == w.procs.by_pid[2].state == "exited" and row.mem_bytes == 0 == w.memory.by_owner.get(2, 0)
    exited, (status, reason) = client.wait(child.pid), w.wait(1, 2)
    assert (exited.status, exited.reason) == (status, reason.replace("process 1 ", f"process {client.pid} "))
    assert errno_of(lambda: client.wait(child.pid)) == errno_of(lambda: w.wait(1, 2)) == Errno.ESRCH.name
