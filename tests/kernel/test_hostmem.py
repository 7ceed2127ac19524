"""The kernel places host-visible tensors itself: slab slots for small ones, a file for big ones."""

import asyncio
import os

import torch

from llmos.kernel.hostmem import MIN_SLOT, SLAB_BYTES, SMALL_MAX, HostMemory, slot_size
from llmos.userland import AsyncClient, Client

from conftest import shm_files, start_kernel


def test_size_classes_are_powers_of_two_from_min_slot():
    assert [slot_size(n) for n in (1, MIN_SLOT, MIN_SLOT + 1, 1000, SMALL_MAX)] == [
        MIN_SLOT, MIN_SLOT, 2 * MIN_SLOT, 1024, SMALL_MAX,
    ]  # fmt: skip


def test_slots_fill_a_slab_then_a_new_one_and_only_one_empty_slab_is_kept(tmp_path):
    mem = HostMemory(str(tmp_path))
    per_slab = SLAB_BYTES // 4096
    placed = [mem.place(4000) for _ in range(per_slab + 1)]
    first = placed[0][0]
    assert {path for path, _ in placed[:per_slab]} == {first} and placed[-1][0] != first
    assert sorted(offset for _, offset in placed[:per_slab]) == list(range(0, SLAB_BYTES, 4096))  # no overlap
    assert len(os.listdir(tmp_path)) == 2
    removed = [mem.give(path, offset) for path, offset in placed]
    assert removed.count(True) == 1 and len(os.listdir(tmp_path)) == 1 == len(mem)  # the spare of its class
    again = mem.place(4000)
    assert os.listdir(tmp_path) == [os.path.basename(again[0])]  # the spare is used, no new file
    mem.close()


def test_a_reused_slot_is_zeroed(tmp_path):
    mem = HostMemory(str(tmp_path))
    path, offset = mem.place(300)
    mem.view(path, offset, 300)[:] = b"\x07" * 300
    mem.give(path, offset)
    assert mem.place(300) == (path, offset)
    assert bytes(mem.view(path, offset, 300)) == bytes(300)
    mem.close()


def test_a_big_tensor_gets_a_file_of_its_own_removed_when_given_back(tmp_path):
    mem = HostMemory(str(tmp_path))
    small = mem.place(100)
    path, offset = mem.place(SMALL_MAX + 1)
    assert offset == 0 and path != small[0] and os.path.getsize(path) == SMALL_MAX + 1
    assert mem.give(path, offset) is True and not os.path.exists(path)
    mem.close()


def test_small_tensors_share_a_file_and_a_loop_of_alloc_and_free_makes_no_new_one(kernel, client):
    before = shm_files(kernel)
    with Client(kernel.address, name="slabs") as c:
        refs = [c.put(torch.full((8, 8), float(i))) for i in range(20)]
        made = shm_files(kernel) - before
        assert len(made) <= 1  # a file each before slabs (none new if a slab of the class had room)
        assert [c.read(ref.handle)[0, 0].item() for ref in refs] == [float(i) for i in range(20)]
        secret = c.put(torch.full((8, 8), 42.0))
        c.free(secret.handle)
        with Client(kernel.address, name="slabs-next") as other:
            fresh = other.alloc("cpu0", [8, 8], "float32")  # likely the very slot just freed
            assert other.read(fresh.handle).eq(0).all()  # never another process's bytes
        for ref in refs:
            c.free(ref.handle)
        settled = shm_files(kernel)
        for _ in range(50):
            c.free(c.put(torch.ones(8, 8)).handle)
        assert shm_files(kernel) == settled


def test_a_freed_tensor_keeps_its_place_while_queued_work_still_reads_it(runtime_dir):
    """P queues `a + a` behind a long matmul and frees `a`; Q then allocates a tensor of a's size class
    and writes 9s into it, served first (VTC: Q has had less service). Were a's slot handed out at the
    free, Q's bytes would be what P's add reads."""
    kp = start_kernel(runtime_dir, "hostmem-busy", policy="vtc")

    async def p_side(q: Client) -> torch.Tensor:
        async with AsyncClient(kp.address, name="p") as p:
            x = await p.put(torch.rand(1500, 1500))
            a = await p.put(torch.full((8, 8), 3.0))
            slow = asyncio.ensure_future(p.compute("matmul", x.handle, x.handle))
            add = asyncio.ensure_future(p.compute("add", a.handle, a.handle))
            await asyncio.sleep(0)  # both sent, in this order
            await p.free(a.handle)
            b = q.alloc("cpu0", [8, 8], "float32")  # the slot a held, were it free
            q.write(b.handle, torch.full((8, 8), 9.0))
            await slow
            return await p.read((await add).handle)

    try:
        with Client(kp.address, name="q") as q:
            assert asyncio.run(p_side(q)).eq(6.0).all()
    finally:
        assert kp.stop() == 0


def test_a_full_shared_memory_folder_is_an_error_at_once_and_leaves_no_file(tmp_path, monkeypatch):
    def full(fd, offset, size):
        raise OSError(28, "No space left on device")

    mem = HostMemory(str(tmp_path))
    monkeypatch.setattr(os, "posix_fallocate", full)
    for size in (100, SMALL_MAX + 1):
        try:
            mem.place(size)
        except OSError as exc:
            assert exc.errno == 28
        else:
            raise AssertionError("placed in a full folder")
    assert os.listdir(tmp_path) == [] and len(mem) == 0
