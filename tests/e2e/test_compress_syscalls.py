"""model_quantize and model_prune end to end: the report, the memory charge, generation, checkpoints, refusals."""

import copy
import os
import threading

import pytest
import torch

from llmos.drivers.models import TinyGPT, TinyGPTConfig
from llmos.drivers.models.checkpoint import save_checkpoint
from llmos.drivers.models.prune import prune_model
from llmos.drivers.models.quantize import quantize_model
from llmos.drivers.models.reference import greedy_paged
from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError

from conftest import start_kernel

CONFIG = dict(d_model=64, n_layers=2, n_heads=2, max_len=64)
KV = dict(kv_blocks=8, block_size=8)
ONE_THREAD = {"threads": 1}
"""The driver hosts' torch threads: each call times a few hundred decode steps, which two threads next to
another test worker's made ten times slower."""


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return str(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def weights(storage):
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(**CONFIG)).eval()
    save_checkpoint(os.path.join(storage, "tiny.safetensors"), model)
    return model


@pytest.fixture(scope="module")
def ckernel(runtime_dir, storage, weights):
    kp = start_kernel(runtime_dir, "compress", storage_dir=storage, driver_options={"cpu": ONE_THREAD})
    yield kp
    assert kp.stop() == 0


@pytest.fixture
def cc(ckernel):
    with Client(ckernel.address, name="compress") as c:
        yield c


def windows(n: int = 4, length: int = 33) -> list[list[int]]:
    return torch.randint(0, 256, (n, length), generator=torch.Generator().manual_seed(1)).tolist()


def greedy(model: torch.nn.Module, prompt: list[int], tokens: int) -> list[int]:
    """The in-process greedy continuation through the model's paged step."""
    return greedy_paged(model, [prompt], tokens, block_size=8)[0]


def test_int8_reports_recharges_and_generates_as_the_in_process_quantized_model(cc, weights):
    info = cc.model_load("cpu", checkpoint="tiny.safetensors", **KV)
    held = cc.memstat()[0].by_process[cc.pid]
    done = cc.model_quantize(info.model, "int8", windows=windows())
    assert done.compression == "int8" and done.layers == 2 * 4 + 1  # four linear layers a block, and the tied head
    assert done.bytes_after < 0.3 * done.bytes_before
    assert done.charged_before == info.bytes and done.charged_after == info.bytes - done.bytes_before + done.bytes_after
    assert cc.memstat()[0].by_process[cc.pid] == held - (done.charged_before - done.charged_after)
    [row] = [r for r in cc.memstat()[0].models if r.charged == cc.pid]
    assert (row.weights, row.compression, row.optimizer) == (done.bytes_after, "int8", 0)
    assert done.bytes_before + row.kv == info.bytes  # the weights as loaded, and the KV storage
    assert [h.nbytes for h in cc.handles() if h.kind == "model"] == [done.charged_after]
    assert 0 < done.perplexity_before and abs(done.perplexity_after / done.perplexity_before - 1) < 0.01
    assert done.tok_s_before > 0 and done.tok_s_after > 0
    prompt = [5, 9, 13, 40]
    mine = copy.deepcopy(weights)
    quantize_model(mine, "int8", 0)
    assert cc.generate(info.model, prompt, max_tokens=20).ids == greedy(mine, prompt, 20)
    cc.model_free(info.model)


def test_without_windows_perplexity_is_not_measured(cc):
    info = cc.model_load("cpu", checkpoint="tiny.safetensors", **KV)
    done = cc.model_prune(info.model, 0.25)
    assert done.perplexity_before == done.perplexity_after == 0.0
    cc.model_free(info.model)


def test_a_waiting_alloc_goes_ahead_when_a_model_is_quantized(runtime_dir, storage, weights):
    tpu = {"hbm_bytes": 4 << 20}  # a small device, filled up below
    kp = start_kernel(runtime_dir, "compress-wait", storage_dir=storage, drivers=["mocktpu"], driver_options={"mocktpu": tpu})
    try:
        with Client(kp.address, name="hog") as hog, Client(kp.address, name="patient") as patient:
            info = hog.model_load("mocktpu", checkpoint="tiny.safetensors", **KV)
            dev = hog.device("mocktpu0")
            spare = 16 << 10
            hog.alloc("mocktpu", [dev.capacity_bytes - dev.used_bytes - spare], "uint8")
            want = spare + (64 << 10)  # fits once the int4 model has given back what it no longer holds
            got = []
            waiter = threading.Thread(target=lambda: got.append(patient.alloc("mocktpu", [want], "uint8", wait=True)))
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive() and not got  # parked in the kernel
            done = hog.model_quantize(info.model, "int4")
            assert done.charged_before - done.charged_after > want - spare
            waiter.join(10)
            assert got and got[0].nbytes == want
    finally:
        assert kp.stop() == 0


def exact_sparsity(model: torch.nn.Module, sparsity: float) -> float:
    """What magnitude pruning must reach: round(sparsity * n) zeros in each block matrix of n weights."""
    sizes = [m.weight.numel() for name, m in model.named_modules() if name.startswith("blocks.") and type(m) is torch.nn.Linear]
    return sum(round(sparsity * n) for n in sizes) / sum(sizes)


@pytest.mark.parametrize("scheme", ["int4", "prune0.3", "prune2:4"])
def test_compressed_models_round_trip_through_a_checkpoint(cc, weights, scheme):
    info = cc.model_load("cpu", checkpoint="tiny.safetensors", **KV)
    if scheme == "int4":
        done = cc.model_quantize(info.model, "int4", group_size=16)
        assert done.compression == "int4/g16"
    else:
        sparsity, pattern = (0.5, "2:4") if scheme == "prune2:4" else (0.3, "unstructured")
        done = cc.model_prune(info.model, sparsity, pattern)
        assert done.compression == f"sparse/{pattern}" and done.sparsity == exact_sparsity(weights, sparsity)
    probe = windows(1, 40)[0]
    logprobs = cc.logprobs(info.model, probe)
    cc.model_save(info.model, f"{scheme}.safetensors")
    cc.model_free(info.model)
    again = cc.model_load("cpu", checkpoint=f"{scheme}.safetensors", **KV)
    assert again.compression == done.compression and again.bytes == done.charged_after
    assert cc.logprobs(again.model, probe) == logprobs
    with pytest.raises(LlmosError) as err:
        cc.train_step(again.model, [probe[:9]])
    assert err.value.errno == Errno.EINVAL and "does not train" in err.value.message
    cc.model_free(again.model)


def test_a_model_another_process_holds_is_refused_with_eperm(cc, ckernel):
    info = cc.model_load("cpu", checkpoint="tiny.safetensors", **KV)
    with Client(ckernel.address, name="other") as other:
        theirs = cc.share(info.model, other.pid)
        for c, handle in ((other, theirs), (cc, info.model)):  # neither the receiver nor the loader may change it
            with pytest.raises(LlmosError) as err:
                c.model_quantize(handle, "int8")
            assert err.value.errno == Errno.EPERM and "held by process" in err.value.message
        other.model_free(theirs)
    assert cc.model_quantize(info.model, "int8").compression == "int8"  # alone again: allowed
    cc.model_free(info.model)


def test_bad_compression_requests_are_einval(cc):
    info = cc.model_load("cpu", checkpoint="tiny.safetensors", **KV)
    bad = [
        ("quantize", dict(scheme="int3")),
        ("quantize", dict(scheme="int8", group_size=32)),
        ("quantize", dict(scheme="int4", group_size=-2)),
        ("quantize", dict(scheme="int4", group_size=24)),  # rows of 64 do not split into 24s
        ("quantize", dict(scheme="int8", windows=[[1]])),
        ("quantize", dict(scheme="int8", windows=[[1, 2, 999]])),
        ("prune", dict(sparsity=1.0)),
        ("prune", dict(sparsity=-0.1)),
        ("prune", dict(sparsity=float("nan"))),
        ("prune", dict(sparsity=0.5, pattern="4:8")),
        ("prune", dict(sparsity=0.3, pattern="2:4")),
    ]
    for call, kwargs in bad:
        with pytest.raises(LlmosError) as err:
            getattr(cc, f"model_{call}")(info.model, **kwargs)
        assert err.value.errno == Errno.EINVAL, (call, kwargs)
    with pytest.raises(LlmosError) as err:
        cc.model_quantize(info.model + 100, "int8")
    assert err.value.errno == Errno.EBADF
    cc.model_quantize(info.model, "int8")
    for again in (lambda: cc.model_quantize(info.model, "int4"), lambda: cc.model_prune(info.model, 0.5),
                  lambda: cc.model_save(info.model, "int8-hf", format="hf")):  # fmt: skip
        with pytest.raises(LlmosError) as err:
            again()
        assert err.value.errno == Errno.EINVAL
    assert cc.generate(info.model, [1, 2, 3], max_tokens=4).tokens == 4  # the kernel and the model still serve
    cc.model_free(info.model)
