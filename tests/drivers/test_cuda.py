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
