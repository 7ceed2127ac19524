"""tinygpt: the paged KV step gives the plain forward's logits, whatever the batching and block layout."""

import pytest
import torch
from llmos.drivers.models import TinyGPT, TinyGPTConfig, architectures, build_model
from llmos.drivers.models.reference import greedy_contiguous, greedy_paged
from model_checks import (
    assert_schedule_matches,
    check_fork,
    check_interleaved,
    check_size_function,
    run_schedule,
    scattered_tables,
)

ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TinyGPT(TinyGPTConfig(d_model=32, n_layers=2, n_heads=4, max_len=64)).eval()


def forward_reference(model):
    """The model's own plain forward, the reference of its paged step."""
    return lambda seq: model(torch.tensor([seq]))[0]


def assert_matches_forward(model, seqs, got):
    assert_schedule_matches(forward_reference(model), seqs, got, ATOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interleaved_paged_steps_match_forward(model, seed):
    check_interleaved(model, forward_reference(model), seed, ATOL)


def test_lone_sequence_with_consecutive_blocks_matches_forward(model):
    """A lone sequence reads consecutive block ids as one slice of the cache and gathers any other table."""
    seq = torch.randint(0, 256, (30,), generator=torch.Generator().manual_seed(5)).tolist()
    # the second table is consecutive for its first 3 blocks only: the step switches from slicing to gathering
    for table in ([3, 4, 5, 6, 7, 8, 9, 10], [3, 4, 5, 9, 6, 7, 8, 10]):
        kv = model.new_kv(num_blocks=12, block_size=4)
        got = run_schedule(model, kv, [seq], [table], chunk=5, seed=4)
        assert_matches_forward(model, [seq], got)


def test_prefill_then_decode_batched(model):
    seqs = [list(range(10, 30)), list(range(50, 55)), list(range(100, 137))]
    kv = model.new_kv(num_blocks=30, block_size=5)
    tables = scattered_tables(3, 8, 30, seed=7)
    prompt = [12, 3, 30]
    got = {}
    logits = model.step(kv, [s[:n] for s, n in zip(seqs, prompt)], [0, 0, 0], tables)
    for i, n in enumerate(prompt):
        got[(i, n - 1)] = logits[i]
    pos = list(prompt)
    while any(p < len(s) for p, s in zip(pos, seqs)):  # one decode token each, sequences at different positions
        live = [i for i in range(3) if pos[i] < len(seqs[i])]
        logits = model.step(kv, [[seqs[i][pos[i]]] for i in live], [pos[i] for i in live], [tables[i] for i in live])
        for i, row in zip(live, logits):
            got[(i, pos[i])] = row
            pos[i] += 1
    assert len(got) == sum(map(len, seqs)) - sum(prompt) + 3
    assert_matches_forward(model, seqs, got)


def test_copy_on_write_fork_matches_forward(model):
    """A fork shares the parent's full blocks; its partial last block is copied to a fresh id before it diverges."""
    check_fork(model, forward_reference(model), ATOL)


def test_step_rejects_a_table_too_short(model):
    kv = model.new_kv(num_blocks=4, block_size=4)
    with pytest.raises(ValueError, match="cannot hold"):
        model.step(kv, [list(range(9))], [0], [[0, 1]])


def test_greedy_loops_agree_with_full_recompute(model):
    prompts = torch.randint(0, 256, (3, 8), generator=torch.Generator().manual_seed(3))
    seq = prompts.clone()
    for _ in range(12):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
    expected = seq[:, 8:].tolist()
    assert greedy_contiguous(model, prompts, 12).tolist() == expected
    assert greedy_paged(model, prompts.tolist(), 12, block_size=3) == expected


def test_untied_head_and_log_probs():
    torch.manual_seed(1)
    m = TinyGPT(TinyGPTConfig(d_model=16, n_layers=1, n_heads=2, max_len=16, tie_weights=False)).eval()
    assert m.head is not None
    tokens = torch.randint(0, 256, (2, 10))
    lp = m.log_probs(tokens)
    assert lp.shape == (2, 9) and (lp <= 0).all()
    expected = torch.log_softmax(m(tokens[:, :-1]), -1)[0, 4, tokens[0, 5]]
    torch.testing.assert_close(lp[0, 4], expected)


def test_config_round_trip_and_registry():
    cfg = TinyGPTConfig(d_model=24, n_heads=3, tie_weights=False)
    assert TinyGPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        TinyGPTConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError):
        TinyGPTConfig(d_model=10, n_heads=3)
    arch = architectures()["tinygpt"]
    assert arch.model_class is TinyGPT and arch.config_class is TinyGPTConfig
    assert isinstance(build_model("tinygpt", cfg.to_dict()), TinyGPT)


@pytest.mark.parametrize(
    "config, dtype, kv_blocks, block_size",
    [({}, "float32", 8, 16), (dict(d_model=32, n_layers=2, n_heads=2, max_len=64, tie_weights=False, mlp_ratio=2), "bfloat16", 5, 4),
     (dict(vocab_size=50, d_model=12, n_heads=3), "float16", 1, 1)],
)  # fmt: skip
def test_the_kernels_size_function_gives_what_the_driver_builds(config, dtype, kv_blocks, block_size):
    """The kernel admits a model's bytes from `tinygpt_size` before the driver builds it: they must agree."""
    from llmos.drivers.models.tinygpt_config import tinygpt_size

    check_size_function("tinygpt", tinygpt_size, config, dtype, kv_blocks, block_size, [{"n_layers": 2.5}])
