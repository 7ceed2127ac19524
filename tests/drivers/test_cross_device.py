"""One userland program on every device of one kernel: cpu, two mock TPUs (and a GPU where there is one).

The program is a small transformer-like op chain (layer_norm -> matmul ->
gelu -> softmax). The CPU's result matches torch in float32; every other
device's matches the CPU's within bfloat16 tolerance, and the mock TPUs'
results really are bfloat16-rounded. CUDA, absent on a machine without a
GPU, is marked absent rather than failing the boot.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError


@pytest.fixture(scope="module")
def multi_kernel(runtime_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMOS_PLUGINS", os.environ["LLMOS_PLUGINS"] + ",llmos.drivers.mocktpu,llmos.drivers.cuda")
        kp = boot.start(KernelConfig(name="multi", runtime_dir=runtime_dir, drivers=["cpu", "mocktpu", "cuda"],
                                     driver_options={"mocktpu": {"count": 2, "hbm_bytes": 64 << 20}},
                                     log_level="warning"))
    yield kp
    assert kp.stop() == 0


def chain(c: Client, device: str, x, w, gamma, beta) -> torch.Tensor:
    """layer_norm(x) @ w -> gelu -> softmax, every op on `device`, through syscalls."""
    hx, hw, hg, hb = (c.put(t, device).handle for t in (x, w, gamma, beta))
    h = c.compute("layer_norm", hx, hg, hb).handle
    h = c.compute("matmul", h, hw).handle
    h = c.compute("gelu", h, approximate="tanh").handle
    out = c.compute("softmax", h).handle
    return c.read(out)


def test_one_program_agrees_on_every_device(multi_kernel):
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(16, 64, generator=gen), torch.randn(64, 32, generator=gen) / 8
    gamma, beta = torch.rand(64, generator=gen) + 0.5, torch.randn(64, generator=gen) / 10
    expected = torch.softmax(F.gelu(F.layer_norm(x, (64,), gamma, beta) @ w, approximate="tanh"), -1)
    with Client(multi_kernel.address) as c:
        devices = sorted(d.name for d in c.devices())
        assert {"cpu0", "mocktpu0", "mocktpu1"} <= set(devices)
        results = {name: chain(c, name, x, w, gamma, beta) for name in devices}
    torch.testing.assert_close(results["cpu0"], expected, rtol=1e-5, atol=1e-6)
    for name, got in results.items():
        torch.testing.assert_close(got, results["cpu0"], rtol=1.6e-2, atol=1e-3, msg=lambda m: f"{name}: {m}")
    for tpu in ("mocktpu0", "mocktpu1"):
        assert torch.equal(results[tpu], results[tpu].bfloat16().float())
        assert not torch.equal(results[tpu], results["cpu0"])


def test_a_missing_gpu_is_absent_not_fatal(multi_kernel):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with Client(multi_kernel.address) as c:
        assert not [d for d in c.devices() if d.kind == "cuda"]
        with pytest.raises(LlmosError) as err:
            c.device("cuda")
        assert err.value.errno == Errno.ENODEV


def test_the_mock_tpus_are_separate_devices(multi_kernel):
    with Client(multi_kernel.address) as c:
        infos = {d.name: d for d in c.devices() if d.kind == "mocktpu"}
        assert sorted(infos) == ["mocktpu0", "mocktpu1"]
        assert len({d.driver_os_pid for d in infos.values()}) == 2
        assert all(d.capacity_bytes == 64 << 20 and not d.host_visible for d in infos.values())
        ref = c.put(torch.ones(4), "mocktpu1")
        assert c.device("mocktpu1").used_bytes == 16 and c.device("mocktpu0").used_bytes == 0
        with pytest.raises(LlmosError) as err:  # the kernel's accounting refuses more than HBM
            c.alloc("mocktpu0", [65 << 20], "uint8")
        assert err.value.errno == Errno.ENOMEM
        c.free(ref.handle)


def test_example_program_runs_on_mocktpu_and_reports_simulated_time(multi_kernel):
    with Client(multi_kernel.address) as c:
        out = []
        child = c.spawn("matmul", ["--device", "mocktpu", "-n", "128"])
        assert c.wait(child.pid, on_output=out.append).status == 0
    text = "".join(out)
    assert "on mocktpu0" in text and "-> OK" in text and "ms simulated" in text
