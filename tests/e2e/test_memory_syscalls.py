"""Memory through syscalls: KV sequences grow, fork and shrink; quotas; waiting allocations; the map."""

import subprocess
import sys
import threading

import pytest
import torch

from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError

from conftest import start_kernel, until

LAYOUT = dict(layers=2, kv_heads=2, head_dim=8)  # 2 x 2 x 2 x 8 x 2 bytes = 128 bytes a token


@pytest.fixture
def pool(client):
    return client.kv_pool("cpu", **LAYOUT, blocks=32)


def test_pool_is_real_device_memory_charged_to_its_creator(client, pool):
    assert pool.block_bytes == 16 * 128 and pool.num_blocks == 32
    same = client.kv_pool("cpu0", **LAYOUT)  # found again by layout; no blocks needed
    assert same.pool == pool.pool
    (cpu,) = client.memstat()
    assert cpu.by_process[client.pid] >= 32 * pool.block_bytes
    with pytest.raises(LlmosError) as err:
        client.kv_pool("cpu", layers=3, kv_heads=1, head_dim=4)
    assert err.value.errno == Errno.EINVAL and "blocks=N" in err.value.message


def test_a_sequence_grows_forks_and_shrinks(client, pool):
    seq = client.kv_alloc("cpu", pool.pool, 20)
    assert len(seq.table) == 2 and seq.num_tokens == 20
    grown = client.kv_append(seq.seq, 12)  # fills the second block exactly
    assert grown.table == seq.table and grown.num_tokens == 32
    grown = client.kv_append(seq.seq, 1)
    assert len(grown.table) == 3
    fork = client.kv_fork(seq.seq)
    assert fork.table == grown.table and fork.shared == 3  # forking allocates nothing
    diverged = client.kv_append(fork.seq, 1)  # the shared partial last block is copied, only it
    assert diverged.copies == [(grown.table[2], diverged.table[2])] and diverged.table[:2] == grown.table[:2]
    stats = {p.pool: p for p in client.memstat()[0].kv_pools}[pool.pool]
    assert stats.by_process[client.pid] == 4 and stats.shared == 2
    client.kv_free(seq.seq)
    assert client.kv_table(fork.seq).shared == 0
    client.kv_free(fork.seq)
    stats = {p.pool: p for p in client.memstat()[0].kv_pools}[pool.pool]
    assert client.pid not in stats.by_process


def test_driver_copies_blocks_inside_a_tensor():
    """What kv_append's copies turn into on the device: whole blocks copied, nothing else touched."""
    from llmos.drivers.base import TorchDriver
    from llmos.syscalls.driver import TensorDesc

    drv = TorchDriver(0)
    drv.alloc(TensorDesc(1, [4, 8], "uint8"))
    drv.tensors[1].copy_(torch.arange(32, dtype=torch.uint8).view(4, 8))
    drv.copy_blocks(TensorDesc(1, [4, 8], "uint8"), 8, [(0, 3), (1, 2)])
    assert drv.tensors[1][3].tolist() == list(range(8)) and drv.tensors[1][2].tolist() == list(range(8, 16))
    assert drv.tensors[1][0].tolist() == list(range(8))


def test_prefix_blocks_are_shared_between_processes(kernel, client, pool):
    prompt = list(range(100, 140))  # 2 full blocks and a partial one
    mine = client.kv_alloc("cpu", pool.pool, prompt)
    with Client(kernel.address, name="neighbour") as other:
        theirs = other.kv_alloc("cpu", pool.pool, prompt)
        assert theirs.table[:2] == mine.table[:2] and theirs.table[2] != mine.table[2]
    client.kv_free(mine.seq)


def test_bad_kv_calls(client, pool):
    ref = client.alloc("cpu", [2])
    for call, errno in [
        (lambda: client.kv_table(ref.handle), Errno.EBADF),  # a tensor is not a sequence
        (lambda: client.kv_table(9999), Errno.EBADF),
        (lambda: client.kv_alloc("cpu", "no-such-pool", 4), Errno.ENODEV),
        (lambda: client.kv_alloc("cpu", pool.pool, 10_000), Errno.ENOMEM),
        (lambda: client.kv_pool("cpu", layers=0, kv_heads=1, head_dim=1, blocks=1), Errno.EINVAL),
    ]:
        with pytest.raises(LlmosError) as err:
            call()
        assert err.value.errno == errno
    seq = client.kv_alloc("cpu", pool.pool, 1)
    with pytest.raises(LlmosError) as err:
        client.read(seq.seq)
    assert err.value.errno == Errno.EBADF and "KV sequence" in err.value.message
    client.kv_free(seq.seq)
    with pytest.raises(LlmosError) as err:
        client.kv_free(seq.seq)
    assert err.value.errno == Errno.EBADF


def test_a_killed_process_gives_back_its_kv_blocks(kernel, client, pool):
    code = (
        "import sys, time\nfrom llmos.userland import Client\n"
        f"c = Client(sys.argv[1])\ns = c.kv_alloc('cpu', {pool.pool!r}, 100)\nprint(len(s.table), flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, kernel.address], stdout=subprocess.PIPE, text=True)
    held = int(proc.stdout.readline())

    def used() -> int:
        return {p.pool: p for p in client.memstat()[0].kv_pools}[pool.pool].used

    assert used() >= held == 7
    proc.kill()
    proc.wait()
    until(lambda: used() < held)


def test_spawn_sets_the_childs_quotas(client):
    child = client.spawn("hold", ["4"], quotas={"cpu0": 1 << 20})  # hold wants 4 MiB
    exited = client.wait(child.pid)
    assert exited.status == 1  # its put failed with ENOMEM
    (cpu,) = client.memstat()
    assert child.pid not in cpu.quotas


def test_alloc_waits_for_memory_others_hold(runtime_dir):
    # a 64 MiB device: the hog fills it with real shared memory, so never the machine's whole RAM
    kp = start_kernel(runtime_dir, "waiting", default_quota=None, driver_options={"cpu": {"capacity_bytes": 64 << 20}})
    try:
        with Client(kp.address, name="hog") as hog, Client(kp.address, name="patient") as patient:
            free = hog.device("cpu0").capacity_bytes - hog.device("cpu0").used_bytes
            big = hog.alloc("cpu", [free - (1 << 20)], "uint8")  # all but 1 MiB
            with pytest.raises(LlmosError) as err:
                patient.alloc("cpu", [4 << 20], "uint8")
            assert err.value.errno == Errno.EAGAIN
            got = []
            waiter = threading.Thread(target=lambda: got.append(patient.alloc("cpu", [4 << 20], "uint8", wait=True)))
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive() and not got  # parked in the kernel
            hog.free(big.handle)
            waiter.join(10)
            assert got and got[0].nbytes == 4 << 20
            patient.write(got[0].handle, torch.zeros(4 << 20, dtype=torch.uint8))
    finally:
        assert kp.stop() == 0


def test_kvwatch_program_shows_growth_fork_and_shrink(client):
    out = []
    child = client.spawn("kvwatch")
    assert client.wait(child.pid, on_output=out.append).status == 0
    lines = "".join(out).splitlines()
    assert "table [0, 1] (20 tokens" in lines[1] and "table [0, 1, 2] (36 tokens, 3 shared)" in lines[3]
    assert "copies [(2, 3)]" in lines[4] and lines[-1].split("pool:")[1].split()[0] == "0"


def test_kvwatch_holds_its_blocks_until_killed_and_the_kill_gives_them_back(client):
    """Lab 5's third question: a program holding KV blocks is killed, and its blocks and pool go back."""
    child = client.spawn("kvwatch", ["--hold", "60"])

    def held() -> int:
        return sum(p.by_process.get(child.pid, 0) for d in client.memstat() for p in d.kv_pools)

    until(lambda: held() == 4)  # parent and fork: blocks 0, 1, 2 shared and the fork's copy 3
    client.kill(child.pid)
    assert client.wait(child.pid).status != 0
    until(lambda: held() == 0)
    assert not any(p.by_process.get(child.pid) for d in client.memstat() for p in d.kv_pools)
