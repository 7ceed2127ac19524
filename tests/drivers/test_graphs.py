"""Captured decode steps (drivers/graphs.py) with the fake backend, on the CPU: buckets, the fixed-shape decode
plan, what is captured and what falls back to eager, the memory charged to the model, and the driver's hook.
The same with real CUDA graphs is tests/drivers/test_cuda.py's (skipped without a GPU)."""

import pytest
import torch

from llmos.drivers.base import DriverError
from llmos.drivers.cpu.driver import CpuDriver
from llmos.drivers.graphs import BATCH_BUCKETS, DecodeGraphs, EagerGraphs, batch_bucket, context_bucket
from llmos.drivers.ledger import MemoryLedger
from llmos.drivers.models.decode_plan import DecodePlan
from llmos.drivers.models.tinygpt import TinyGPT, TinyGPTConfig
from llmos.syscalls import Errno
from llmos.syscalls.driver import SeqStep

CONFIG = dict(d_model=32, n_layers=2, n_heads=2, max_len=64)
TARGET = "llmos.drivers.models:tinygpt_architecture"


def test_buckets():
    assert [batch_bucket(n) for n in (1, 2, 3, 5, 8, 9, 100, 128)] == [1, 2, 4, 8, 8, 16, 128, 128]
    assert batch_bucket(129) is None and batch_bucket(3, (4, 2)) == 4
    assert [context_bucket(b, 16) for b in (1, 2, 3, 5, 9, 16)] == [1, 2, 4, 8, 16, 16]
    assert context_bucket(5, 6) == 6  # never past the model's whole context


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyGPT(TinyGPTConfig(**CONFIG)).to(torch.float64).eval()


def prefilled(model, prompts, tables):
    """A KV cache holding `prompts` at the blocks of `tables` (4-position blocks), and each prompt's next token."""
    kv = model.new_kv(16, 4)
    logits = model.step(kv, prompts, [0] * len(prompts), tables)
    return kv, logits.argmax(-1).tolist()


def test_the_fixed_shape_plan_gives_the_eager_step_s_logits_and_cache(model):
    prompts, tables = [[1, 2, 3], [4] * 9, [5, 6]], [[7, 2, 9], [0, 3, 11, 12], [5, 4]]
    kv, nxt = prefilled(model, prompts, tables)
    twin = model.new_kv(16, 4)
    twin.data.copy_(kv.data)
    positions = [len(p) for p in prompts]
    eager = model.step(kv, [[t] for t in nxt], positions, tables)
    plan = DecodePlan(twin, batch=4, blocks=4)  # padded: a fourth row, and more blocks than any reads
    plan.fill(nxt, positions, tables)
    with torch.inference_mode():
        graphed = model.run_plan(plan)
    assert graphed.shape[0] == 4 and torch.allclose(graphed[:3], eager, atol=1e-10)
    assert torch.allclose(twin.data, kv.data, atol=1e-12)  # the same keys and values to the same slots (padding too)
    assert plan.nbytes() == 8 * 4 * (4 + 4)


def test_decode_steps_replay_one_capture_per_bucket_and_fall_back_to_eager_for_the_rest(model):
    prompts, tables = [[1, 2, 3], [9, 8, 7, 6, 5]], [[0, 1, 2, 3], [4, 5, 6, 7]]
    kv, nxt = prefilled(model, prompts, tables)
    ref_kv, ref_nxt = prefilled(model, prompts, tables)
    backend, charges = EagerGraphs(), []
    graphs = DecodeGraphs(model, kv, backend, charges.append)
    assert graphs.step(prompts, [0, 0], tables) is None  # a prefill runs eagerly
    positions = [len(p) for p in prompts]
    for _ in range(8):  # contexts grow from 2 to 4 blocks: buckets (2, 2) and (2, 4)
        logits = graphs.step([[t] for t in nxt], positions, tables)
        ref = model.step(ref_kv, [[t] for t in ref_nxt], positions, tables)
        assert torch.allclose(logits, ref, atol=1e-10)
        nxt, ref_nxt = logits.argmax(-1).tolist(), ref.argmax(-1).tolist()
        positions = [p + 1 for p in positions]
    assert sorted(graphs.graphs) == [(2, 2), (2, 4)] and backend.captures == 2 and backend.replays == 8
    assert sum(charges) == graphs.charged > 0 and len(charges) == 2  # each capture charged once
    assert graphs.step([[1]] * 3, [3] * 3, tables + tables[:1]) is not None  # a third sequence: bucket 4
    assert (4, 1) in graphs.graphs
    too_many = BATCH_BUCKETS[-1] + 1
    assert graphs.step([[1]] * too_many, [0] * too_many, [[0]] * too_many) is None  # past the largest bucket
    with pytest.raises(ValueError):
        graphs.step([[1]], [70], [[0]])  # past max_len: the same ValueError as the eager step


def test_a_capture_the_device_cannot_hold_runs_eagerly_and_is_not_tried_again(model):
    prompts, tables = [[1, 2]], [[0, 1]]
    kv, nxt = prefilled(model, prompts, tables)

    def refuse(nbytes: int) -> None:
        raise DriverError(Errno.ENOMEM, f"{nbytes} bytes do not fit")

    backend = EagerGraphs()
    graphs = DecodeGraphs(model, kv, backend, refuse)
    assert graphs.step([nxt], [2], tables) is None and graphs.refused == {(1, 1)}
    assert graphs.step([nxt], [2], tables) is None and backend.captures == 1 and graphs.charged == 0


class GraphedCpu(CpuDriver):
    """A CPU driver with a ledger that captures its decode steps with the fake backend: the hook the CUDA
    driver's option `graphs` turns on, without a GPU."""

    def __init__(self, index: int, options: dict | None = None):
        super().__init__(index, options)
        self.ledger = MemoryLedger(64 << 20)
        self.backend = EagerGraphs()

    def graph_backend(self) -> EagerGraphs:
        return self.backend


def generate(d, prompts: list[list[int]], new: int, blocks: int = 4, mid: int = 1) -> list[list[int]]:
    """Greedy draws of `new` tokens for each prompt through model `mid` of `d`: one prefill step, then `new - 1`
    decode steps (sequence s holds `blocks` blocks from `blocks * s` on); the tokens of each prompt."""
    seqs = [SeqStep(tokens=p, position=0, table=list(range(blocks * s, blocks * (s + 1)))) for s, p in enumerate(prompts)]
    first = d.model_step(mid, seqs)
    seqs = [SeqStep(tokens=[t], position=len(p), table=s.table) for t, p, s in zip(first, prompts, seqs)]
    drawn = first + d.model_step(mid, seqs, steps=new - 1)
    return [drawn[s :: len(prompts)] for s in range(len(prompts))]


def test_the_driver_replays_decode_steps_with_the_eager_step_s_tokens_and_charges_the_model(tmp_path):
    plain, graphed = CpuDriver(0, {"shm_dir": str(tmp_path)}), GraphedCpu(0, {"shm_dir": str(tmp_path)})
    for d in (plain, graphed):
        desc = d.model_load(1, TARGET, CONFIG, "float64", "", kv_blocks=16, block_size=4, seed=3)
    prompts = [[1, 2, 3], [40, 41, 42, 43, 44], [7]]
    assert generate(graphed, prompts, 10) == generate(plain, prompts, 10)
    m = graphed.models[1]
    assert graphed.backend.replays == 9 and graphed.backend.captures == len(m.graphs.graphs) >= 2
    assert graphed.ledger.holding(("model", 1)) == desc.param_bytes + desc.kv_bytes + m.graphs.charged
    graphed.model_quantize(1, "int8", 0, [[1, 2, 3, 4, 5]])  # new layers: the graphs and their charge go
    assert m.graphs.graphs == {} and graphed.ledger.holding(("model", 1)) < desc.param_bytes + desc.kv_bytes
    graphed.model_free(1)
    assert graphed.ledger.used == 0


def test_bfloat16_weights_kv_and_graphed_steps_on_the_cpu(tmp_path):
    """The mechanics of bfloat16 end to end, on the CPU (the CUDA test compares its text with float32's): the
    weights and the KV pool hold half the bytes, and the eager and the graphed steps run in bfloat16."""
    f32, bf16 = CpuDriver(0, {"shm_dir": str(tmp_path)}), GraphedCpu(0, {"shm_dir": str(tmp_path)})
    a = f32.model_load(1, TARGET, CONFIG, "float32", "", kv_blocks=8, block_size=4, seed=3)
    b = bf16.model_load(1, TARGET, CONFIG, "bfloat16", "", kv_blocks=8, block_size=4, seed=3)
    assert (b.param_bytes, b.kv_bytes) == (a.param_bytes // 2, a.kv_bytes // 2)
    m = bf16.models[1]
    assert m.kv.data.dtype == torch.bfloat16 and {p.dtype for p in m.model.parameters()} == {torch.bfloat16}
    texts = generate(bf16, [[1, 2, 3], [4, 5]], 6)
    assert [len(t) for t in texts] == [6, 6] and bf16.backend.replays == 5
    assert all(0 <= t < m.model.config.vocab_size for t in texts[0] + texts[1])
