"""Prefix caching in generate: calls that share a prompt's start share its KV blocks, with the same output."""

import asyncio
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos.drivers.models import TinyGPT, TinyGPTConfig
from llmos.drivers.models.checkpoint import save_checkpoint
from llmos.drivers.models.reference import greedy_contiguous
from llmos.drivers.models.tokenizer import ByteTokenizer
from llmos.userland import AsyncClient, Client

from conftest import occupy_device, start_kernel, until

CONFIG = dict(d_model=32, n_layers=2, n_heads=2, max_len=128)
SYSTEM = "You are a terse assistant. Answer in one word. "  # 47 bytes: 11 full blocks of 4


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("storage"))
    torch.manual_seed(1)
    save_checkpoint(os.path.join(path, "tiny.safetensors"), TinyGPT(TinyGPTConfig(**CONFIG)).eval())
    return path


@pytest.fixture(scope="module")
def pkernel(runtime_dir, storage, tmp_path_factory):
    log = tmp_path_factory.mktemp("plog") / "kernel.log"
    kp = start_kernel(runtime_dir, "prefix", storage_dir=storage, log_file=str(log))
    yield kp
    assert kp.stop() == 0
    assert "kernel.bug" not in log.read_text()


@pytest.fixture
def pc(pkernel):
    with Client(pkernel.address, name="prefix") as c:
        yield c


def model_pool(c):
    """The KV pool of the one model loaded on cpu0 (named by the kernel's model id, not the caller's handle)."""
    (pool,) = [p for d in c.memstat() for p in d.kv_pools if p.pool.startswith("model")]
    return pool


def load(c, **options):
    return c.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", block_size=4, **{"kv_blocks": 64, **options})


def test_a_second_process_reuses_the_shared_prompt_and_gets_the_same_text(pkernel, pc, storage):
    info = load(pc)
    torch.manual_seed(1)
    reference = TinyGPT(TinyGPTConfig(**CONFIG)).eval()  # the checkpoint's weights: same seed
    prompts = [SYSTEM + "Sky?", SYSTEM + "Grass?"]
    want = [ByteTokenizer().decode(greedy_contiguous(reference, torch.tensor([ByteTokenizer().encode(p)]), 24)[0].tolist())
            for p in prompts]  # fmt: skip
    first = pc.generate(info.model, prompts[0], max_tokens=24)
    assert first.cached == 0 and first.text == want[0]
    with Client(pkernel.address, name="second") as other:
        handle = pc.share(info.model, other.pid)
        second = other.generate(handle, prompts[1], max_tokens=24)
        uncached = other.generate(handle, prompts[1], max_tokens=24, cache=False)
    assert second.cached == 44  # the 11 full blocks of the system prompt, computed once by the first process
    assert uncached.cached == 0
    assert second.text == uncached.text == want[1]
    pool = model_pool(pc)
    assert pool.prefix_hits == 44 and pool.prefix_tokens == len(prompts[0]) + len(prompts[1])
    pc.model_free(info.model)


def test_a_model_loaded_without_the_cache_shares_nothing(pc):
    info = load(pc, cache=False)
    texts = [pc.generate(info.model, SYSTEM + "Sea?", max_tokens=8) for _ in range(2)]
    assert [r.cached for r in texts] == [0, 0] and texts[0].text == texts[1].text
    pc.model_free(info.model)


def test_a_process_killed_mid_generation_leaves_the_blocks_others_map(pkernel, pc):
    info = load(pc)
    alone = pc.generate(info.model, SYSTEM + "Why?", max_tokens=60, cache=False).text
    child = pc.spawn("talk", [str(info.model), SYSTEM], models=[info.model])  # four calls at a time on SYSTEM
    until(lambda: model_pool(pc).prefix_hits > 0, timeout=30)

    async def race():
        async with AsyncClient(pkernel.address, name="racer") as a:
            mine = pc.share(info.model, a.pid)
            task = asyncio.ensure_future(a.generate(mine, SYSTEM + "Why?", max_tokens=60))
            await asyncio.sleep(0.05)  # its prompt maps the blocks the talker's calls map too
            pc.kill(child.pid, 9)
            return await task

    result = asyncio.run(race())
    assert result.cached >= 44 and result.text == alone
    pc.wait(child.pid)
    pool = model_pool(pc)
    assert pool.used == 0 and pool.sequences == 0 and pool.cached > 0  # every block free, the named ones kept
    pc.model_free(info.model)


def solo_then_together(pkernel, pc, prompts: list[str], warm: str, kv_blocks: int, preempt: str = "recompute",
                       swap_blocks: int = 0, **kw) -> tuple[list[str], list]:  # fmt: skip
    """The texts of the calls one by one without the cache, and the Completions of the same calls made
    at once, from another process, on a model with the cache (and `preempt`) whose blocks `warm` filled first."""
    solo_model = load(pc, cache=False)
    solo = [pc.generate(solo_model.model, p, seed=i, **kw).text for i, p in enumerate(prompts)]
    pc.model_free(solo_model.model)
    info = load(pc, kv_blocks=kv_blocks, preempt=preempt, swap_blocks=swap_blocks)
    pc.generate(info.model, warm, max_tokens=1)

    async def together():
        async with AsyncClient(pkernel.address, name="many") as a:
            mine = pc.share(info.model, a.pid)
            busy = await occupy_device(a)
            done = await asyncio.gather(*(a.generate(mine, p, seed=i, **kw) for i, p in enumerate(prompts)))
            await busy
            return done

    results = asyncio.run(together())
    pc.model_free(info.model)
    return solo, results


PREFIXES = st.sampled_from(["", SYSTEM, SYSTEM[:20], "abcdefgh" * 3])


@settings(max_examples=8)
@given(
    parts=st.lists(st.tuples(PREFIXES, st.text("xyz?! ", min_size=1, max_size=9)), min_size=2, max_size=5),
    sampled=st.booleans(),
    kv_blocks=st.sampled_from([24, 64]),
    preempt=st.sampled_from([("recompute", 0), ("swap", 0), ("swap", 6)]),  # a small swap pool falls back to recompute
)
def test_prefix_hits_and_preemption_change_no_output(pkernel, parts, sampled, kv_blocks, preempt):
    """Greedy or seeded, crowded (preemption by recompute or swap) or not: each text is the one the call gets
    alone, uncached."""
    prompts = [prefix + tail for prefix, tail in parts]
    with Client(pkernel.address, name="solo") as pc:
        solo, results = solo_then_together(pkernel, pc, prompts, prompts[0], kv_blocks, *preempt, max_tokens=20,
                                           temperature=0.9 if sampled else 0.0)  # fmt: skip
    assert [r.text for r in results] == solo


@pytest.mark.parametrize("preempt", ["recompute", "swap"])
@pytest.mark.parametrize("sampled", [False, True])
def test_crowded_calls_that_share_a_prompt_are_preempted_and_hit_with_the_same_text(pkernel, pc, sampled, preempt):
    prompts = [SYSTEM + q for q in ("Sun?", "Moon?", "Rain?", "Snow?", "Wind?")]
    # 5 x 18 blocks, 11 of them shared, in 24: they cannot all fit at once
    solo, results = solo_then_together(pkernel, pc, prompts, SYSTEM, 24, preempt, max_tokens=20,
                                       temperature=0.9 if sampled else 0.0)  # fmt: skip
    assert [r.text for r in results] == solo
    assert all(r.cached >= 44 for r in results) and sum(r.preemptions for r in results) > 0
    swaps = sum(r.swaps for r in results)
    assert swaps > 0 if preempt == "swap" else swaps == 0


def test_a_spawn_time_kv_quota_applies_to_a_model_pool(pc):
    """A child spawned with kv_quota 4 may not hold more than 4 of a shared model's blocks (16 positions)."""
    info = load(pc)
    ends = []
    for quota in (4, 12):  # 30 + 8 positions: 10 blocks of 4
        child = pc.spawn("generate", ["--model", str(info.model), "--prompt", "a" * 30, "--max-tokens", "8"],
                         kv_quota=quota, models=[info.model])  # fmt: skip
        output = []
        ends.append((child.pid, pc.wait(child.pid, on_output=output.append).status, "".join(output)))
    (pid, status, text), (_, status_ok, _) = ends
    assert status == 1 and "ENOMEM" in text and f"give {pid} that many" in text, text
    assert status_ok == 0
    assert model_pool(pc).used == 0  # the quotas changed no books
    pc.model_free(info.model)


def test_the_memory_map_shows_evictions_and_the_swap_pool(pc, capsys):
    from llmos.userland.cli.main import main

    info = load(pc, kv_blocks=16, preempt="swap", swap_blocks=6)
    # each call feeds 44 + 3 positions (12 blocks) and leaves its 11 full ones named (cached) when it ends:
    # the second takes the 5 never-used blocks and evicts 7 of the first's; the third takes the 1 left
    # free and evicts 11, oldest first
    for letter in "abc":
        pc.generate(info.model, letter * 44, max_tokens=4)
    pool = model_pool(pc)
    assert (pool.host_total, pool.host_used, pool.swapped) == (6, 0, 0)
    assert (pool.evictions, pool.cached, pool.prefix_hits, pool.prefix_tokens) == (18, 15, 0, 3 * 44)
    assert main(["mem", "--kernel", "prefix"]) == 0
    out = capsys.readouterr().out
    assert "0 of 132 prompt tokens found (0.0% hit rate), 18 blocks evicted" in out
    assert "swap: 0/6 host blocks used by 0 swapped-out sequences" in out
    pc.model_free(info.model)
