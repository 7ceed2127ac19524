"""Checks shared by the model tests: a paged `step` run must give a reference's logits, whatever the schedule.

Each architecture's tests (tests/models) build a model and a reference that
gives the logits of every position of a whole sequence (the model's own
plain forward, or transformers' implementation of the same weights), then
drive the paged step through random interleavings, chunked prefills,
scattered block tables and a copy-on-write fork, comparing every logits row
the step returns with the reference's. The checks every architecture shares
beyond that (its size function against the driver, the Hugging Face folder
round trip, a few training steps) are here too.
"""

import json
import math
import random
from collections.abc import Callable

import pytest
import torch

Reference = Callable[[list[int]], torch.Tensor]
"""Logits [T, vocab] of every position of a whole token sequence."""


def scattered_tables(n_seqs: int, blocks_each: int, num_blocks: int, seed: int) -> list[list[int]]:
    """Disjoint block tables made of shuffled, non-contiguous block ids."""
    ids = list(range(num_blocks))
    random.Random(seed).shuffle(ids)
    return [ids[i * blocks_each : (i + 1) * blocks_each] for i in range(n_seqs)]


def run_schedule(model, kv, seqs, tables, chunk: int, seed: int) -> dict[tuple[int, int], torch.Tensor]:
    """Feed every sequence through `step` in a random interleaving; return {(seq, position): logits}."""
    rng = random.Random(seed)
    pos = [0] * len(seqs)
    got = {}
    while any(p < len(s) for p, s in zip(pos, seqs)):
        live = [i for i in range(len(seqs)) if pos[i] < len(seqs[i])]
        batch = rng.sample(live, rng.randint(1, len(live)))  # a random subset, in a random order
        feeds = [seqs[i][pos[i] : pos[i] + rng.randint(1, chunk)] for i in batch]
        logits = model.step(kv, feeds, [pos[i] for i in batch], [tables[i] for i in batch])
        assert logits.shape == (len(batch), model.config.vocab_size)
        for row, i, f in zip(logits, batch, feeds):
            pos[i] += len(f)
            got[(i, pos[i] - 1)] = row
    return got


def assert_schedule_matches(reference: Reference, seqs, got, atol: float) -> None:
    """Every row `run_schedule` got equals the reference's logits at its position."""
    for i, s in enumerate(seqs):
        full = reference(s)
        for (j, p), row in got.items():
            if j == i:
                torch.testing.assert_close(row, full[p], atol=atol, rtol=0)


def check_interleaved(model, reference: Reference, seed: int, atol: float, vocab: int = 256) -> None:
    """Four sequences of different lengths, random interleaving and chunks, scattered tables of 4-position blocks."""
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (23, 9, 40, 17)]
    kv = model.new_kv(num_blocks=64, block_size=4)
    tables = scattered_tables(len(seqs), 10, 64, seed)
    got = run_schedule(model, kv, seqs, tables, chunk=7, seed=seed)
    assert len(got) > len(seqs)  # more than one step per sequence
    assert_schedule_matches(reference, seqs, got, atol)


def check_fork(model, reference: Reference, atol: float) -> None:
    """A fork shares the parent's full blocks; its partial last block is copied to a fresh id before it diverges."""
    kv = model.new_kv(num_blocks=16, block_size=4)
    prefix = list(range(60, 70))  # 10 tokens: blocks 0 and 1 full, block 2 half filled
    parent_table = [9, 2, 13, 5]
    model.step(kv, [prefix], [0], [parent_table])
    kv.copy_blocks([(13, 7)])  # copy-on-write of the shared partial block
    child_table = [9, 2, 7, 11]
    parent = prefix + [1, 2, 3, 4]
    child = prefix + [200, 201, 202, 203]
    logits = model.step(kv, [child[10:], parent[10:]], [10, 10], [child_table, parent_table])
    torch.testing.assert_close(logits[0], reference(child)[-1], atol=atol, rtol=0)
    torch.testing.assert_close(logits[1], reference(parent)[-1], atol=atol, rtol=0)
    # the parent's own block kept the parent's data: the child wrote to the copy
    assert not torch.equal(kv.block(13), kv.block(7))


@torch.no_grad()
def spread_weights(model: torch.nn.Module, seed: int, std: float = 0.08) -> torch.nn.Module:
    """Redraw a model's weights wider than a fresh init (norm scales near 1), so logits differ by more than rounding."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen) * std
        scale = name.endswith("weight") and ("norm" in name or "ln" in name)
        p.copy_(1.0 + noise if scale else noise)
    return model


def check_size_function(arch: str, size, config: dict, dtype: str, kv_blocks: int, block_size: int, bad: list[dict]):
    """The kernel admits a model's bytes from its size function before the driver builds it: they must agree.

    Every override in `bad` makes the config one the size function refuses with ValueError.
    """
    from llmos.drivers.base import TorchDriver

    target = f"llmos.drivers.models:{arch}_architecture"
    built = TorchDriver(0).model_load(1, target, config, dtype, "", kv_blocks, block_size)
    assert size(config, dtype, kv_blocks, block_size) == built
    for override in bad:
        with pytest.raises(ValueError):
            size({**config, **override}, dtype, kv_blocks, block_size)


def check_hf_round_trip(ours, ref, arch: str, folder, vocab: int, atol: float) -> dict:
    """Save `ours` as a Hugging Face folder: transformers reads it as `ref`, and reloading gives the same tensors.

    Returns the config.json written.
    """
    import transformers
    from llmos.drivers.models.hf_weights import load_pretrained, save_pretrained

    save_pretrained(ours, arch, str(folder))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tokens = torch.randint(0, vocab, (2, 30), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(theirs(tokens).logits, ref(tokens).logits, atol=atol, rtol=0)
    loaded_arch, again = load_pretrained(str(folder))
    assert loaded_arch == arch and again.config == ours.config
    mine, reloaded = ours.hf_tensors(), again.hf_tensors()
    assert mine.keys() == reloaded.keys() and all(torch.equal(mine[k], reloaded[k]) for k in mine)
    return json.loads((folder / "config.json").read_text())


def check_training(arch: str, config: dict) -> None:
    """A dozen `train_step`s on one repeated batch of a fresh model learn it: the loss falls by a quarter."""
    from llmos.drivers.models import build_model
    from llmos.drivers.models.train import make_optimizer, train_step

    torch.manual_seed(0)
    model = build_model(arch, config)
    opt = make_optimizer(model, lr=1e-2)
    batch = torch.randint(0, 259, (4, 33), generator=torch.Generator().manual_seed(0))
    losses = [train_step(model, opt, batch)[0] for _ in range(12)]
    assert math.isclose(losses[0], math.log(259), rel_tol=0.05)  # an untrained model is near uniform
    assert losses[-1] < 0.75 * losses[0]
