"""The driver host turns kernel messages into driver calls: tensors the kernel placed in shared files
(host-visible), forget, and allocation by the driver for other devices."""

import os

import torch

from llmos.drivers.cpu.driver import CpuDriver
from llmos.drivers.host import Host
from llmos.drivers.mocktpu.driver import MockTpuDriver
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls.driver import TensorDesc


def answer(host: Host, msg: proto.ToDriver) -> proto.FromDriver:
    """The host's answer to one message, decoded."""
    return proto.from_driver_decoder.decode(host.handle(msg, [None])[0])


def shared_file(folder, size: int) -> str:
    """A zeroed file as the kernel makes one."""
    path = os.path.join(folder, "slab256-1")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.ftruncate(fd, size)
    os.close(fd)
    return path


def test_ops_and_block_copies_on_tensors_the_kernel_placed_in_one_file(tmp_path):
    path = shared_file(tmp_path, 4096)
    a, b, out = (TensorDesc(tid, [2, 4], "float32", path, 256 * tid) for tid in (1, 2, 3))
    data = torch.from_file(path, shared=True, size=1024, dtype=torch.float32)  # the kernel's side of the file
    data[64:72], data[128:136] = torch.arange(8.0), torch.full((8,), 10.0)
    host = Host(CpuDriver(0, {"shm_dir": str(tmp_path)}), sock=None)

    ok = answer(host, proto.DOp(seq=1, op="add", inputs=[a, b], out=out, params={}, new_out=False))
    assert isinstance(ok, proto.DOk) and ok.seq == 1
    assert data[192:200].tolist() == [10.0 + i for i in range(8)]
    assert answer(host, proto.DCopyBlocks(seq=2, tensor=out, block_bytes=16, pairs=[(1, 0)])).seq == 2
    assert data[192:200].tolist() == [14.0, 15.0, 16.0, 17.0] * 2
    assert data[:64].eq(0).all() and data[72:128].eq(0).all()  # nothing else in the file moved

    assert list(host.driver.mapped) == [path]
    assert isinstance(answer(host, proto.DForget(seq=3, path=path)), proto.DOk)
    assert host.driver.mapped == {}
    assert isinstance(answer(host, proto.DForget(seq=4, path=path)), proto.DOk)  # twice, or never mapped: fine


def test_a_tensor_outside_its_file_is_einval(tmp_path):
    path = shared_file(tmp_path, 1024)
    x = TensorDesc(1, [512], "float32", path, 0)  # 2048 bytes in a 1024-byte file
    host = Host(CpuDriver(0, {"shm_dir": str(tmp_path)}), sock=None)
    fail = answer(host, proto.DOp(seq=1, op="relu", inputs=[x], out=x, params={}, new_out=False))
    assert isinstance(fail, proto.DFail) and fail.errno == Errno.EINVAL


def test_a_device_that_allocates_answers_alloc_with_a_plain_ok_and_frees_a_new_out_that_failed():
    host = Host(MockTpuDriver(0), sock=None)
    x = TensorDesc(1, [4], "float32")
    assert answer(host, proto.DAlloc(seq=1, tensor=x)) == proto.DOk(seq=1)
    out = TensorDesc(2, [4], "float32")
    fail = answer(host, proto.DOp(seq=2, op="no_such_op", inputs=[x], out=out, params={}, new_out=True))
    assert isinstance(fail, proto.DFail) and list(host.driver.tensors) == [1]
    ok = answer(host, proto.DOp(seq=3, op="relu", inputs=[x], out=out, params={}, new_out=True))
    assert isinstance(ok, proto.DOk) and ok.sim_s > 0 and sorted(host.driver.tensors) == [1, 2]
