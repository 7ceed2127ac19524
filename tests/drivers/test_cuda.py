"""The CUDA driver on a machine with a GPU (skipped without one): the conformance kit, its memory ledger against
torch's allocator, decode graphs on and off, bfloat16 against float32."""

import pytest
import torch
from test_graphs import TARGET, generate

from llmos.drivers.conformance import DriverConformance
from llmos.drivers.cuda.driver import CudaDriver

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")


def test_without_a_gpu_the_driver_finds_no_device():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert CudaDriver.count() == 0
    assert CudaDriver(0, {"shm_dir": "/nonexistent"}).capacity == 0  # the host can still say Hello with count 0


@pytest.mark.gpu
@GPU
class TestCudaConformance(DriverConformance):
    driver_class = CudaDriver
    plugin = "llmos.drivers.cuda"
    capacity_options = {"capacity_bytes": 64 << 20}


@pytest.mark.gpu
@GPU
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
@GPU
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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tinygpt (d_model 128, 4 layers) trained 400 steps on the standard library's sources on the GPU, as a
    checkpoint; and 16 held-out prompts of 32 byte ids. Its greedy draws are far from ties, unlike a fresh one's."""
    from llmos.drivers.models.checkpoint import save_checkpoint
    from llmos.drivers.models.tinygpt import TinyGPT, TinyGPTConfig
    from llmos.drivers.models.train import batches, make_optimizer, split_corpus, stdlib_corpus, train_step

    train_ids, held_out = split_corpus(stdlib_corpus(2 << 20))
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(d_model=128, n_layers=4, n_heads=4, max_len=128)).to("cuda:0")
    opt = make_optimizer(model)
    stream = batches(train_ids, 32, 128, seed=0)
    for _ in range(400):
        train_step(model, opt, next(stream))
    path = tmp_path_factory.mktemp("trained") / "tinygpt.safetensors"
    save_checkpoint(str(path), model.cpu())
    prompts = [held_out[i * 4000 : i * 4000 + 32].tolist() for i in range(16)]
    return str(path), prompts


@pytest.mark.gpu
@GPU
def test_decode_graphs_give_the_eager_tokens_and_are_charged(tmp_path, trained):
    """Option graphs: decode steps replay CUDA graphs (batches 1, 3 and 16, contexts growing across block
    buckets) and draw the tokens the eager steps draw, in float32; the captures' memory is charged to the
    model and freed with it."""
    checkpoint, prompts = trained
    drivers = [CudaDriver(0, {"shm_dir": str(tmp_path), "graphs": on}) for on in (False, True)]
    for d in drivers:
        desc = d.model_load(1, TARGET, {}, "float32", checkpoint, kv_blocks=16 * 10, block_size=8)
    for batch in (1, 3, 16):
        eager, graphed = (generate(d, prompts[:batch], 40, blocks=10) for d in drivers)
        assert graphed == eager
    graphs = drivers[1].models[1].graphs
    assert {b for b, _ in graphs.graphs} == {1, 4, 16} and graphs.charged > 0
    assert drivers[1].ledger.holding(("model", 1)) == desc.param_bytes + desc.kv_bytes + graphs.charged
    drivers[1].model_free(1)
    assert drivers[1].ledger.used == 0
    for d in drivers:
        d.close()


BF16_AGREEMENT = 0.75
"""The fraction of held-out prompts whose 32-token greedy continuation the trained tinygpt must write the same
in bfloat16 (weights, KV blocks and the step) as in float32, and with decode graphs as without: a floor set
before any GPU run measured it (the test records what it saw as `bf16_agreement`, `bf16_graphs_agreement`)."""


@pytest.mark.gpu
@GPU
def test_bfloat16_greedy_text_mostly_equals_float32(tmp_path, trained, record_property):
    """The trained model in bfloat16 end to end (weights, KV pool, step; eager and with decode graphs) writes
    the float32 model's greedy text for at least BF16_AGREEMENT of the prompts, and holds half the bytes."""
    checkpoint, prompts = trained
    eager, graphed = (CudaDriver(0, {"shm_dir": str(tmp_path), "graphs": on}) for on in (False, True))
    f32 = eager.model_load(1, TARGET, {}, "float32", checkpoint, kv_blocks=16 * 10, block_size=8)
    bf16 = eager.model_load(2, TARGET, {}, "bfloat16", checkpoint, kv_blocks=16 * 10, block_size=8)
    graphed.model_load(1, TARGET, {}, "bfloat16", checkpoint, kv_blocks=16 * 10, block_size=8)
    assert (bf16.param_bytes, bf16.kv_bytes) == (f32.param_bytes // 2, f32.kv_bytes // 2)
    m = eager.models[2]
    assert m.kv.data.dtype == torch.bfloat16 and {p.dtype for p in m.model.parameters()} == {torch.bfloat16}
    want = generate(eager, prompts, 32, blocks=10, mid=1)
    for name, texts in (("bf16_agreement", generate(eager, prompts, 32, blocks=10, mid=2)),
                        ("bf16_graphs_agreement", generate(graphed, prompts, 32, blocks=10))):  # fmt: skip
        same = sum(a == b for a, b in zip(texts, want))
        record_property(name, same / len(want))
        assert same >= BF16_AGREEMENT * len(want), name
    for d in (eager, graphed):
        d.close()
