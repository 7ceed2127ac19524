"""Small CPU tensors share slab files: one file and one kernel mapping for many, zeroed when reused."""

import os

import torch

from llmos.drivers.cpu.driver import CpuDriver
from llmos.drivers.cpu.slabs import MIN_SLOT, SLAB_BYTES, SMALL_MAX, Slabs, slot_size
from llmos.syscalls.driver import TensorDesc
from llmos.userland import Client

from conftest import shm_files, until


def test_size_classes_are_powers_of_two_from_min_slot():
    assert [slot_size(n) for n in (1, MIN_SLOT, MIN_SLOT + 1, 1000, SMALL_MAX)] == [
        MIN_SLOT, MIN_SLOT, 2 * MIN_SLOT, 1024, SMALL_MAX,
    ]  # fmt: skip


def test_slots_fill_a_slab_then_a_new_one_and_an_empty_slab_is_unlinked(tmp_path):
    slabs = Slabs(str(tmp_path))
    per_slab = SLAB_BYTES // 4096
    taken = [slabs.take(4000) for _ in range(per_slab + 1)]
    first = taken[0][0]
    assert {slab for slab, _ in taken[:per_slab]} == {first} and taken[-1][0] is not first
    assert sorted(offset for _, offset in taken[:per_slab]) == list(range(0, SLAB_BYTES, 4096))  # no overlap
    assert len(os.listdir(tmp_path)) == 2 and slabs.count == 2
    for slab, offset in taken:
        slabs.give(slab, offset)
    assert os.listdir(tmp_path) == [] and slabs.count == 0


def test_a_reused_slot_is_zeroed(tmp_path):
    slabs = Slabs(str(tmp_path))
    keep = slabs.take(300)  # keeps the slab alive
    slab, offset = slabs.take(300)
    slab.data[offset : offset + 300] = 7
    slabs.give(slab, offset)
    again, offset2 = slabs.take(300)
    assert (again, offset2) == (slab, offset)
    assert int(again.data[offset2 : offset2 + 300].sum()) == 0
    slabs.give(*keep)
    slabs.give(again, offset2)


def test_driver_cuts_small_tensors_from_slabs_and_gives_big_ones_a_file(tmp_path):
    driver = CpuDriver(0, {"shm_dir": str(tmp_path)})
    small = [driver.alloc(TensorDesc(tid, [10, 10], "float32")) for tid in (1, 2)]
    big = driver.alloc(TensorDesc(3, [SMALL_MAX + 1], "uint8"))
    assert small[0][0] == small[1][0] and small[0][1] != small[1][1]  # one file, two offsets
    assert big == (os.path.join(str(tmp_path), "t3"), 0)
    driver.tensors[1].fill_(1.5)
    driver.tensors[2].fill_(-2.0)
    with open(small[0][0], "rb") as f:
        f.seek(small[0][1])
        assert torch.frombuffer(bytearray(f.read(400)), dtype=torch.float32).eq(1.5).all()
    driver.close()
    assert os.listdir(tmp_path) == []


def test_many_small_tensors_of_a_process_share_one_file_and_leave_none(kernel, client):
    before = shm_files(kernel)
    with Client(kernel.address, name="slabs") as c:
        refs = [c.put(torch.full((8, 8), float(i))) for i in range(20)]
        made = shm_files(kernel) - before
        assert len(made) == 1  # a file each before slabs
        assert [c.read(ref.handle)[0, 0].item() for ref in refs] == [float(i) for i in range(20)]
        secret = c.put(torch.full((8, 8), 42.0))
        c.free(secret.handle)
        with Client(kernel.address, name="slabs-next") as other:
            fresh = other.alloc("cpu0", [8, 8], "float32")  # likely the very slot just freed
            assert other.read(fresh.handle).eq(0).all()  # never another process's bytes
    until(lambda: shm_files(kernel) == before)  # frees are posted: the host unlinks the slab just after
