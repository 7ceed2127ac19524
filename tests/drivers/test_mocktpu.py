"""The mock TPU driver: the conformance kit, its options, bfloat16 numerics, HBM and simulated time."""

import pytest
import torch

from llmos.drivers import costmodel
from llmos.drivers.base import DriverError
from llmos.drivers.conformance import DriverConformance
from llmos.drivers.mocktpu.cost import op_seconds
from llmos.drivers.mocktpu.driver import MockTpuDriver, TpuConfig
from llmos.syscalls import Errno
from llmos.syscalls.driver import TensorDesc


class TestMockTpuConformance(DriverConformance):
    driver_class = MockTpuDriver
    plugin = "llmos.drivers.mocktpu"
    capacity_options = {"hbm_bytes": 1 << 20}
    computes_in = {"float32": "bfloat16"}


def test_defaults_are_the_tpu_v4_preset():
    spec = MockTpuDriver(0, {"shm_dir": "/nonexistent"}).spec()
    preset = costmodel.device("mocktpu")
    assert (spec.peak_flops, spec.mem_bw_bytes_s, spec.capacity_bytes) == (
        preset.peak_flops, preset.mem_bandwidth, preset.mem_capacity)
    assert spec.simulated and not spec.host_visible
    assert "float64" not in spec.dtypes and "bfloat16" in spec.dtypes
    assert MockTpuDriver.count({}) == 1 and MockTpuDriver.count({"count": 3}) == 3


def test_options_set_the_chip():
    spec = MockTpuDriver(0, {"cores": 4, "core_flops": 1e12, "hbm_bytes": 1 << 30, "hbm_bw_bytes_s": 5e11}).spec()
    assert (spec.peak_flops, spec.capacity_bytes, spec.mem_bw_bytes_s) == (4e12, 1 << 30, 5e11)
    assert "4 cores" in spec.description


@pytest.mark.parametrize("options", [{"hbm": 1}, {"cores": 0}, {"cores": 1.5}, {"hbm_bytes": "big"}, {"count": True}])
def test_bad_options_are_refused(options):
    with pytest.raises(ValueError, match="mocktpu"):
        TpuConfig.from_options(options)


def put(driver, tid, x):
    desc = TensorDesc(tid, list(x.shape), str(x.dtype).removeprefix("torch."))
    driver.alloc(desc)
    driver.write(tid, memoryview(x.contiguous().view(-1).view(torch.uint8).numpy()))
    return desc


def get(driver, desc):
    return torch.frombuffer(bytearray(driver.read(desc.tid)), dtype=torch.uint8).view(
        getattr(torch, desc.dtype)).reshape(desc.shape)


def test_float32_ops_compute_in_bfloat16():
    d = MockTpuDriver(0)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 64, generator=gen), torch.randn(64, 16, generator=gen)
    da, db = put(d, 1, a), put(d, 2, b)
    out = TensorDesc(3, [32, 16], "float32")
    d.alloc(out)
    d.run_op("matmul", [da, db], out, {})
    got = get(d, out)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, (a.bfloat16() @ b.bfloat16()).float(), rtol=0, atol=0)
    assert torch.equal(got, got.bfloat16().float())  # every value is a bfloat16
    assert not torch.allclose(got, a @ b, rtol=1e-5, atol=1e-5)


def test_integer_ops_are_exact():
    d = MockTpuDriver(0)
    a = torch.arange(-1000, 1000, dtype=torch.int32) * 1001  # beyond bfloat16's 8 bits of mantissa
    da = put(d, 1, a)
    out = TensorDesc(2, [2000], "int32")
    d.alloc(out)
    d.run_op("add", [da, da], out, {})
    assert torch.equal(get(d, out), a + a)


def test_hbm_is_enforced_by_the_driver():
    d = MockTpuDriver(0, {"hbm_bytes": 4096})
    d.alloc(TensorDesc(1, [512], "float32"))  # 2048 bytes
    d.alloc(TensorDesc(2, [1024], "bfloat16"))  # 2048 more: full
    with pytest.raises(DriverError) as err:
        d.alloc(TensorDesc(3, [1], "int8"))
    assert err.value.errno == Errno.ENOMEM and "HBM" in err.value.message
    d.free(1)
    d.alloc(TensorDesc(3, [2048], "int8"))
    assert d.ledger.used == 4096


def test_simulated_time_is_the_roofline():
    d = MockTpuDriver(0, {"cores": 1, "core_flops": 1e9, "hbm_bw_bytes_s": 1e9, "overhead_s": 1e-3})
    a = put(d, 1, torch.ones(100, 200))
    b = put(d, 2, torch.ones(200, 300))
    out = TensorDesc(3, [100, 300], "float32")
    d.alloc(out)
    seconds = d.run_op("matmul", [a, b], out, {})
    flops = 2 * 100 * 300 * 200  # 12e6 -> 12 ms at 1 GFLOP/s; bytes 4 * (2e4 + 6e4 + 3e4) = 0.44 ms at 1 GB/s
    assert seconds == pytest.approx(1e-3 + flops / 1e9)
    relu = d.run_op("relu", [out], out, {})
    assert relu == pytest.approx(1e-3 + 2 * 4 * 100 * 300 / 1e9)  # memory-bound: read and write 30000 floats
    two_cores = MockTpuDriver(0, {"cores": 2, "core_flops": 1e9, "hbm_bw_bytes_s": 1e9, "overhead_s": 1e-3})
    assert op_seconds(two_cores.cost, 1e-3, "matmul", [[100, 200], [200, 300]], [100, 300], "float32") == (
        pytest.approx(1e-3 + flops / 2e9))
