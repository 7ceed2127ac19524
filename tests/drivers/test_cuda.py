"""The CUDA driver passes the conformance kit on a machine with a GPU (skipped without one)."""

import pytest
import torch

from llmos.drivers.conformance import DriverConformance
from llmos.drivers.cuda.driver import CudaDriver


def test_without_a_gpu_the_driver_finds_no_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert CudaDriver.count() == 0
    assert CudaDriver(0, {"shm_dir": "/nonexistent"}).capacity == 0  # the host can still say Hello with count 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")
class TestCudaConformance(DriverConformance):
    driver_class = CudaDriver
    plugin = "llmos.drivers.cuda"
    capacity_options = {"capacity_bytes": 64 << 20}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")
def test_the_ledger_matches_what_torch_allocated(tmp_path):
    """The driver's ledger against `torch.cuda.memory_allocated`: what it gave out, up to the allocator's
    rounding of each block to 512 bytes, and nothing once it is all freed (other CUDA users may hold more)."""
    from llmos.syscalls.driver import TensorDesc

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    d = CudaDriver(0, {"shm_dir": str(tmp_path), "capacity_bytes": 256 << 20})
    shapes = [[1000], [3, 7, 11], [1 << 20], [1]]
    for tid, shape in enumerate(shapes, 1):
        d.alloc(TensorDesc(tid, shape, "float32"))
    desc = d.model_load(1, "llmos.drivers.models:tinygpt_architecture", dict(d_model=64, n_layers=2, n_heads=2),
                        "float32", "", kv_blocks=16, block_size=16, seed=0)  # fmt: skip
    blocks = len(shapes) + sum(1 for _ in d.models[1].model.parameters()) + 1  # tensors, weights, the KV pool
    held = torch.cuda.memory_allocated() - before
    assert d.ledger.used == sum(4 * torch.Size(s).numel() for s in shapes) + desc.param_bytes + desc.kv_bytes
    assert d.ledger.used <= held <= d.ledger.used + 512 * blocks
    for tid in range(1, len(shapes) + 1):
        d.free(tid)
    d.model_free(1)
    torch.cuda.synchronize()
    assert d.ledger.used == 0 and torch.cuda.memory_allocated() == before
    d.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")
def test_capacity_holds_beside_other_cuda_users(tmp_path):
    """The conformance kit's capacity check passes while this process holds (and torch caches) GPU memory of
    its own: the driver counts what it gave out, not what the process holds."""
    from llmos.drivers.conformance import checks

    others = torch.empty(256 << 20, dtype=torch.uint8, device="cuda:0")  # another user in the same process
    cached = torch.empty(128 << 20, dtype=torch.uint8, device="cuda:0")
    del cached  # freed into torch's cache, still reserved
    h = checks.Harness(CudaDriver(0, {"shm_dir": str(tmp_path), "capacity_bytes": 64 << 20}))
    try:
        checks.check_capacity(h)
    finally:
        h.close()
    del others
