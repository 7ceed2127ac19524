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


def test_a_model_step_moves_kv_blocks_to_the_swap_pool_and_back_before_it_runs(tmp_path):
    host = Host(CpuDriver(0, {"shm_dir": str(tmp_path)}), sock=None)
    load = proto.DModelLoad(seq=1, model=7, arch="tinygpt", target="llmos.drivers.models:tinygpt_architecture", kv_blocks=4,
                            block_size=4, config={"d_model": 16, "n_layers": 1, "n_heads": 2}, swap_blocks=2)  # fmt: skip
    assert isinstance(answer(host, load), proto.DOk)
    kv = host.driver.models[7].kv
    assert kv.host.shape[1] == 2 and kv.host.device.type == "cpu"
    kv.data.copy_(torch.randn_like(kv.data))
    before = kv.data.clone()
    step = proto.SeqStep(tokens=[1, 2], position=0, table=[0])  # writes block 0 after the moves

    def run(seq, moves):
        return answer(host, proto.DModelStep(seq=seq, model=7, seqs=[step], moves=moves))

    out = [proto.BlockMove(out=True, pairs=[(0, 1), (3, 0)])]  # block 0 leaves before the step overwrites it
    assert isinstance(run(2, out), proto.DOk)
    assert torch.equal(kv.host[:, 1], before[:, 0]) and torch.equal(kv.host[:, 0], before[:, 3])
    assert not torch.equal(kv.data[:, 0, :2], before[:, 0, :2])  # the step wrote its two positions there
    back = [proto.BlockMove(out=False, pairs=[(1, 2), (0, 1)])]
    assert isinstance(run(3, back), proto.DOk)
    assert torch.equal(kv.data[:, 2], before[:, 0]) and torch.equal(kv.data[:, 1], before[:, 3])

    moved = kv.data.clone()
    for bad in ([(0, 2)], [(4, 0)]):  # host block 2 and device block 4 do not exist
        fail = run(4, [proto.BlockMove(out=True, pairs=bad)])
        assert isinstance(fail, proto.DFail) and fail.errno == Errno.EINVAL and "out of range" in fail.message
    assert torch.equal(kv.data, moved)  # a refused move copies nothing, and the step does not run
