"""Model syscalls end to end: load, generate, logprobs, save, free, and reclaim on kill."""

import itertools
import os
import subprocess
import sys

import pytest
import torch

from llmos.drivers.models import TinyGPT, TinyGPTConfig
from llmos.drivers.models.checkpoint import save_checkpoint
from llmos.drivers.models.reference import greedy_contiguous
from llmos.drivers.models.tokenizer import ByteTokenizer
from llmos.drivers.models.train import random_windows
from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError

from conftest import occupy_device, start_kernel, until

CONFIG = dict(d_model=32, n_layers=2, n_heads=2, max_len=64)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return str(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def weights(storage):
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(**CONFIG)).eval()
    save_checkpoint(os.path.join(storage, "tiny.safetensors"), model)
    return model


def remove_bottom_up(path: str, levels: int) -> None:
    """Remove a file and the `levels` folders above it, deepest first: pytest's rmtree of its old temporary
    folders recurses once per level and would hit the interpreter's recursion limit on such a tree."""
    os.unlink(path)
    for _ in range(levels):
        path = os.path.dirname(path)
        os.rmdir(path)


@pytest.fixture(scope="module")
def mkernel(runtime_dir, storage, weights, tmp_path_factory):
    log = tmp_path_factory.mktemp("mlog") / "kernel.log"
    kp = start_kernel(runtime_dir, "models", drivers=["cpu", "mocktpu"], storage_dir=storage, log_file=str(log))
    yield kp
    assert kp.stop() == 0
    assert "kernel.bug" not in log.read_text()  # no handler or callback raised, whatever the tests did


@pytest.fixture
def mc(mkernel):
    with Client(mkernel.address, name="models") as c:
        yield c


@pytest.mark.parametrize("device", ["cpu", "mocktpu"])
def test_greedy_generate_matches_the_in_process_model(mc, weights, device):
    info = mc.model_load(device, "tinygpt", checkpoint="tiny.safetensors", kv_blocks=16, block_size=4)
    assert info.device == f"{device}0" and info.params == sum(p.numel() for p in weights.parameters())
    prompt = "hello"
    ids = ByteTokenizer().encode(prompt)
    want = greedy_contiguous(weights, torch.tensor([ids]), 20)[0].tolist()
    pieces = []
    done = mc.generate(info.model, prompt, max_tokens=20, on_text=pieces.append)
    assert done.tokens == 20 and done.finish == "length"
    assert "".join(pieces) == done.text == ByteTokenizer().decode(want)
    assert mc.generate(info.model, ids, max_tokens=20).text == done.text  # token ids in, same text
    mc.model_free(info.model)


def test_sampling_is_deterministic_with_a_seed_and_stops_at_stop_strings(mc):
    info = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=32)  # fixed weights: a fixed text
    runs = [mc.generate(info.model, "ab", max_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=s).text for s in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    full = runs[0]
    stop = full[5:7]
    cut = mc.generate(info.model, "ab", max_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=1, stop=[stop])
    assert cut.finish == "stop" and cut.text == full[: full.find(stop)]
    mc.model_free(info.model)


def test_logprobs_and_save_load_round_trip(mc, weights):
    info = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors")
    ids = ByteTokenizer().encode("the quick brown fox")
    got = mc.logprobs(info.model, ids)
    want = weights.log_probs(torch.tensor([ids]))[0].tolist()
    assert got == pytest.approx(want, abs=1e-5)
    fresh = mc.model_load("cpu", "tinygpt", config=CONFIG)
    mc.model_save(fresh.model, "sub/fresh.safetensors")
    again = mc.model_load("cpu", "tinygpt", checkpoint="sub/fresh.safetensors")
    assert again.config == fresh.config
    assert mc.logprobs(again.model, ids) == mc.logprobs(fresh.model, ids)
    assert mc.generate(again.model, "x", max_tokens=8).text == mc.generate(fresh.model, "x", max_tokens=8).text
    for h in (info.model, fresh.model, again.model):
        mc.model_free(h)


def test_bad_input(mc):
    def errno(fn, *args, **kw):
        with pytest.raises(LlmosError) as err:
            fn(*args, **kw)
        return err.value.errno

    assert errno(mc.model_load, "cpu", "nosuch") == Errno.EINVAL
    assert errno(mc.model_load, "cpu", "tinygpt", config={"d_model": 33, "n_heads": 2}) == Errno.EINVAL
    assert errno(mc.model_load, "cpu", "tinygpt", checkpoint="../../etc/passwd") == Errno.EPERM
    for bad in ({"preempt": "evict"}, {"swap_blocks": 8}, {"preempt": "swap", "swap_blocks": -1}):
        assert errno(mc.model_load, "cpu", "tinygpt", config=CONFIG, **bad) == Errno.EINVAL, bad
    assert errno(mc.generate, 999, "hi") == Errno.EBADF
    info = mc.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=2, block_size=4)
    assert errno(mc.model_save, info.model, "/tmp/outside.safetensors") == Errno.EPERM
    assert errno(mc.generate, info.model, "hello", max_tokens=20) == Errno.ENOMEM  # 24 positions > 8
    mc.model_free(info.model)
    assert errno(mc.model_free, info.model) == Errno.EBADF


def test_logprobs_checks_token_ids_in_the_kernel(mc):
    info = mc.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=2, block_size=4)
    vocab = info.config["vocab_size"]
    for tokens in ([1, 100000], [-1, 2], [2, vocab]):
        with pytest.raises(LlmosError) as err:
            mc.logprobs(info.model, tokens)
        assert err.value.errno == Errno.EINVAL and f"vocabulary has {vocab} tokens" in err.value.message
    with pytest.raises(LlmosError) as err:
        mc.logprobs(info.model, [1] * (CONFIG["max_len"] + 2))
    assert err.value.errno == Errno.EINVAL and "max_len" in err.value.message
    assert len(mc.logprobs(info.model, [1] * (CONFIG["max_len"] + 1))) == CONFIG["max_len"]
    mc.model_free(info.model)


def test_generation_cut_by_max_len_says_so(mc):
    info = mc.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=20, block_size=4)
    prompt = [1] * (CONFIG["max_len"] - 5)
    cut = mc.generate(info.model, prompt, max_tokens=50)
    assert cut.finish == "max_len" and cut.tokens == 6  # positions run out: 5 fed back, the last one not
    whole = mc.generate(info.model, prompt, max_tokens=6)
    assert whole.finish == "length" and whole.tokens == 6
    mc.model_free(info.model)


def _windows(text: str, count: int, width: int, seed: int) -> list[list[int]]:
    """`count` seeded windows of `width` token ids from `text`."""
    ids = torch.tensor(ByteTokenizer().encode(text))
    return random_windows(ids, count, width - 1, torch.Generator().manual_seed(seed)).tolist()


def test_train_step_lowers_the_loss_charges_the_optimizer_and_resumes_bit_for_bit(mc):
    used = lambda: {d.device: d.used for d in mc.memstat()}["cpu0"]  # noqa: E731
    text = "the cat sat on the mat. " * 40
    info = mc.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=4)
    assert info.step == 0
    before = used()
    first = mc.train_step(info.model, _windows(text, 8, 33, seed=0), lr=5e-3)
    param_bytes = 4 * info.params
    assert used() == before + 3 * param_bytes  # gradients and the two AdamW moments, charged once
    losses = [first.loss] + [mc.train_step(info.model, _windows(text, 8, 33, seed=i), lr=5e-3).loss for i in range(1, 30)]
    assert losses[0] > 4.5 and max(losses[-5:]) < 0.6 * losses[0]  # near log(259) at first, then it learns
    assert used() == before + 3 * param_bytes
    mc.model_save(info.model, "train/ck.safetensors")
    resumed = mc.model_load("cpu", "tinygpt", checkpoint="train/ck.safetensors", kv_blocks=4)
    assert resumed.step == 30
    for seed in (100, 101):  # the optimizer state came back too: the same next steps, bit for bit
        batch = _windows(text, 8, 33, seed)
        a, b = mc.train_step(info.model, batch, lr=1e-2), mc.train_step(resumed.model, batch, lr=1e-2)
        assert (a.loss, a.grad_norm, a.step) == (b.loss, b.grad_norm, b.step) == (a.loss, a.grad_norm, 31 + seed - 100)
    ids = ByteTokenizer().encode("the cat")
    assert mc.logprobs(info.model, ids) == mc.logprobs(resumed.model, ids)
    mc.model_free(info.model)
    mc.model_free(resumed.model)
    assert used() == before - info.bytes


def test_train_step_bad_input(mc):
    info = mc.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=4)
    bad = [
        dict(tokens=[]),
        dict(tokens=[[1, 2, 3], [1, 2]]),  # ragged
        dict(tokens=[[1]]),  # no next token to learn
        dict(tokens=[[1] * 66]),  # longer than max_len + 1
        dict(tokens=[[1, 999]]),  # outside the vocabulary
        dict(tokens=[[1, 2]], lr=0.0),
        dict(tokens=[[1, 2]], lr=float("nan")),
        dict(tokens=[[1, 2]], clip=-1.0),
    ]
    for kw in bad:
        with pytest.raises(LlmosError) as err:
            mc.train_step(info.model, **kw)
        assert err.value.errno == Errno.EINVAL, kw
    assert mc.train_step(info.model, [[1, 2]]).step == 1  # nothing was lost: the model still trains
    mc.model_free(info.model)


def test_a_killed_process_gives_its_model_memory_back(mkernel, mc):
    before = {d.device: d.used for d in mc.memstat()}["cpu0"]
    code = (
        "import sys, time\nfrom llmos.userland import Client\n"
        f"c = Client({mkernel.address!r}, name='holder')\n"
        f"c.model_load('cpu', 'tinygpt', config={CONFIG!r})\nprint('loaded', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "loaded"
        assert {d.device: d.used for d in mc.memstat()}["cpu0"] > before
    finally:
        proc.kill()
        proc.wait()
    until(lambda: {d.device: d.used for d in mc.memstat()}["cpu0"] == before, timeout=20)


def test_concurrent_generates_share_batched_steps_and_keep_their_output(mkernel, mc):
    import asyncio

    from llmos.userland import AsyncClient

    prompts = ["alpha", "be", "gamma ray", "d"]
    info = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=32, block_size=4)
    solo = [mc.generate(info.model, p, max_tokens=40, temperature=0.8, seed=i).text for i, p in enumerate(prompts)]
    mc.model_free(info.model)

    async def together():
        async with AsyncClient(mkernel.address, name="batcher") as c:
            model = (await c.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=32, block_size=4)).model
            busy = await occupy_device(c)  # all four queue before the first step (else one may finish alone)
            done = await asyncio.gather(
                *(c.generate(model, p, max_tokens=40, temperature=0.8, seed=i) for i, p in enumerate(prompts))
            )
            await busy
            return done

    results = asyncio.run(together())
    assert [r.text for r in results] == solo  # batching changes nothing a sequence sees
    assert all(r.shared_steps > 0 for r in results)  # ...but they did share steps


def test_preemption_when_kv_runs_out_changes_no_output(mkernel, mc):
    import asyncio

    from llmos.userland import AsyncClient

    prompts = ["alpha", "be", "gamma ray", "d", "epsilon"]
    settings = [dict(temperature=0.0), dict(temperature=0.9, seed=7)]  # greedy, and seeded sampling
    big = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=64, block_size=4)
    solo = [[mc.generate(big.model, p, max_tokens=30, **kw) for p in prompts] for kw in settings]
    mc.model_free(big.model)
    assert all(r.preemptions == 0 for rs in solo for r in rs)

    async def crowded(kw, preempt):  # 5 sequences of up to 38 positions (10 blocks each) in a pool of 12 blocks
        async with AsyncClient(mkernel.address, name="crowd") as c:
            info = await c.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=12, block_size=4,
                                      preempt=preempt)  # fmt: skip
            busy = await occupy_device(c)
            done = await asyncio.gather(*(c.generate(info.model, p, max_tokens=30, **kw) for p in prompts))
            await busy
            return done

    for (kw, alone), preempt in itertools.product(zip(settings, solo), ["recompute", "swap"]):
        results = asyncio.run(crowded(kw, preempt))
        assert [r.text for r in results] == [r.text for r in alone]
        assert sum(r.preemptions for r in results) > 0  # blocks really ran out and were taken back
        assert (sum(r.swaps for r in results) > 0) == (preempt == "swap")  # ... to the host pool, or freed
        # steps were batched; not every request need share one, since a pool this small fits about one
        # sequence whole, and one that is preempted at once may run alone once the others are done
        assert any(r.shared_steps > 0 for r in results)


def test_a_killed_generating_process_frees_its_kv_blocks(mkernel, mc):
    info = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=40, block_size=4)

    def pool():
        return next(p for d in mc.memstat() for p in d.kv_pools if p.pool.startswith("model") and p.total == 40)

    child = mc.spawn("talk", [str(info.model)], models=[info.model])  # it inherits the model handle
    until(lambda: os.path.getsize(child.log) > 0, timeout=20)  # it is generating: text is coming
    until(lambda: pool().by_process.get(child.pid, 0) > 0)  # caught inside a call (between two it holds none)
    mc.kill(child.pid, 9)
    assert mc.wait(child.pid).status == -9
    until(lambda: pool().used == 0, timeout=20)  # its sequence's blocks came back...
    assert mc.generate(info.model, "still here", max_tokens=5).tokens == 5  # ...and the model is still ours
    mc.model_free(info.model)


def test_a_process_killed_while_its_own_model_generates_gives_everything_back(mkernel, mc):
    before = mc.device("cpu0").used_bytes
    child = mc.spawn("talk", ["tiny.safetensors"])  # loads its own model, then generates slowly
    until(lambda: os.path.getsize(child.log) > 0, timeout=20)
    assert mc.device("cpu0").used_bytes > before
    mc.kill(child.pid, 9)
    assert mc.wait(child.pid).status == -9
    until(lambda: mc.device("cpu0").used_bytes == before, timeout=20)  # model, KV storage and blocks
    assert not [p for d in mc.memstat() for p in d.kv_pools if p.pool.startswith("model")]
    info = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=8)  # the kernel goes on
    assert mc.generate(info.model, "after", max_tokens=4).tokens == 4
    mc.model_free(info.model)


def test_a_shared_model_batches_generations_of_several_processes(mkernel, mc):
    import asyncio

    from llmos.userland import AsyncClient

    before = mc.device("cpu0").used_bytes
    info = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=32, block_size=4)
    solo = mc.generate(info.model, "shared", max_tokens=40).text

    async def two_processes():
        async with AsyncClient(mkernel.address, name="p1") as a, AsyncClient(mkernel.address, name="p2") as b:
            ha, hb = mc.share(info.model, a.pid), mc.share(info.model, b.pid)
            busy = await occupy_device(a)  # both queue before the first step
            ra, rb = await asyncio.gather(a.generate(ha, "shared", max_tokens=40), b.generate(hb, "shared", max_tokens=40))
            await busy
            return ra, rb

    ra, rb = asyncio.run(two_processes())
    assert ra.text == solo and rb.text == solo
    assert ra.shared_steps > 0 and rb.shared_steps > 0, (ra, rb)
    mc.model_free(info.model)  # the last holder: the model and its memory are gone
    assert mc.device("cpu0").used_bytes == before
    with pytest.raises(LlmosError) as err:
        mc.generate(info.model, "x")
    assert err.value.errno == Errno.EBADF


def test_a_shared_model_outlives_its_loader_and_the_kernel_holds_its_charge(mkernel, mc):
    before = mc.device("cpu0").used_bytes
    with Client(mkernel.address, name="heir") as heir:
        info = mc.model_load("cpu", "tinygpt", checkpoint="tiny.safetensors", kv_blocks=8, block_size=4)
        theirs = mc.share(info.model, heir.pid)
        mc.model_free(info.model)
        assert heir.generate(theirs, "still here", max_tokens=3).tokens == 3
        assert [p for p in heir.ps() if p.pid == heir.pid][0].mem_bytes == 0  # never charged without asking
        assert heir.memstat()[0].by_process[0] >= info.bytes
        heir.train_step(theirs, [[1, 2, 3]])  # asking to train it is asking to pay for it: the heir takes it over
        assert [p for p in heir.ps() if p.pid == heir.pid][0].mem_bytes == info.bytes + 3 * 4 * info.params
    assert mc.device("cpu0").used_bytes == before  # the heir's exit freed it


def test_a_fresh_model_is_drawn_from_its_seed(mc):
    ids = ByteTokenizer().encode("seeded")
    models = [mc.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=2, seed=s).model for s in (3, 3, 4)]
    a, b, c = (mc.logprobs(h, ids) for h in models)
    assert a == b and a != c
    for h in models:
        mc.model_free(h)


def test_bad_checkpoint_paths_and_files_get_typed_errors(mc, storage):
    def error(fn, *args, **kw):
        with pytest.raises(LlmosError) as err:
            fn(*args, **kw)
        return err.value.errno, err.value.message

    with open(os.path.join(storage, "garbage.safetensors"), "wb") as f:
        f.write(os.urandom(3000))
    with open(os.path.join(storage, "tiny.safetensors"), "rb") as f, open(os.path.join(storage, "cut.safetensors"), "wb") as g:
        g.write(f.read()[:5000])
    deep = "d/" * 3000 + "x.safetensors"
    long_name = "n" * 300 + ".safetensors"
    load = lambda path: error(mc.model_load, "cpu", "tinygpt", checkpoint=path)  # noqa: E731
    assert load("missing.safetensors")[0] == Errno.ENOENT
    assert load("a\0b")[0] == Errno.EINVAL
    assert load(deep)[0] == Errno.ENAMETOOLONG
    assert load(long_name)[0] == Errno.ENAMETOOLONG
    for name in ("garbage.safetensors", "cut.safetensors"):
        errno, message = load(name)
        assert errno == Errno.EINVAL and name in message
    info = mc.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=2, block_size=4)
    save = lambda path: error(mc.model_save, info.model, path)[0]  # noqa: E731
    assert save("a\0b") == Errno.EINVAL
    assert save(deep) == Errno.ENAMETOOLONG
    assert save(long_name) == Errno.ENAMETOOLONG
    mc.model_save(info.model, "e/" * 1200 + "deep.safetensors")  # folders made one by one (was a RecursionError)
    remove_bottom_up(os.path.join(storage, "e/" * 1200 + "deep.safetensors"), levels=1200)
    mc.model_save(info.model, "fine.safetensors")  # the kernel and the driver host go on serving
    mc.model_free(info.model)
