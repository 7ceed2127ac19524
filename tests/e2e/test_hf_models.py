"""Hugging Face-format folders through a booted kernel, against `transformers` on the same folder.

A tiny random Llama (grouped-query attention) and GPT-2, each with a BPE
tokenizer trained by `tokenizers`, are written with `save_pretrained` into
the kernel's models directory, as a user's downloaded folders would be.
"""

import os
import subprocess
import sys

import pytest
import torch

from llmos.syscalls import Errno, auditlog, runtime
from llmos.userland import Client, LlmosError

from conftest import occupy_device, start_kernel, until

hf_folders = pytest.importorskip("hf_folders")  # tests/support, on sys.path through conftest
transformers = pytest.importorskip("transformers")

PROMPTS = ["def main():\n    return", "class Syscall:", "héllo wörld"]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models directory with a tiny Llama and a tiny GPT-2 folder; the transformers models too."""
    root = tmp_path_factory.mktemp("models")
    llama = hf_folders.llama_folder(str(root / "tiny-llama"))
    gpt2 = hf_folders.gpt2_folder(str(root / "tiny-gpt2"))
    return root, {"tiny-llama": llama, "tiny-gpt2": gpt2}


@pytest.fixture(scope="module")
def hf_kernel(runtime_dir, models_dir):
    """A kernel booted with the models directory."""
    kp = start_kernel(runtime_dir, "hf", models_dir=str(models_dir[0]))
    yield kp
    assert kp.stop() == 0


@pytest.fixture
def hc(hf_kernel):
    """A client of that kernel."""
    with Client(hf_kernel.address, name="hf") as c:
        yield c


def reference_greedy(model, tok, prompt: str, max_new: int) -> tuple[list[int], str]:
    """transformers' own greedy generate: the new ids and their text."""
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids.shape[1] :].tolist()
    return new, tok.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("name, arch", [("tiny-llama", "llama"), ("tiny-gpt2", "gpt2")])
def test_a_folder_loads_and_generates_what_transformers_generates(hc, models_dir, name, arch):
    root, models = models_dir
    info = hc.model_load("cpu", path=name, kv_blocks=64)
    tok = hf_folders.folder_tokenizer(str(root / name))
    assert info.arch == arch and info.dtype == "float32" and info.tokenizer.startswith("tokenizer.json")
    assert info.eos == [tok.eos_token_id] and info.config["vocab_size"] == tok.vocab_size
    assert info.params == sum(p.numel() for p in models[name].parameters())
    for prompt in PROMPTS:
        want_ids, want_text = reference_greedy(models[name], tok, prompt, 12)
        done = hc.generate(info.model, prompt, max_tokens=12)
        assert done.ids == want_ids[: len(done.ids)] and len(done.ids) == len(want_ids)
        assert done.text == want_text
    hc.model_free(info.model)


def test_kv_blocks_hold_only_the_kv_heads(hc):
    info = hc.model_load("cpu", path="tiny-llama", kv_blocks=10, block_size=16)
    cfg = info.config
    assert (cfg["n_heads"], cfg["n_kv_heads"]) == (4, 2)  # grouped-query attention: two query heads per KV head
    (pool,) = [p for d in hc.memstat() for p in d.kv_pools if p.pool.startswith("model") and p.total == 10]
    per_block = cfg["n_layers"] * 16 * 2 * cfg["n_kv_heads"] * cfg["head_dim"] * 4  # layers x positions x K,V x float32
    assert pool.block_bytes == per_block  # half what n_heads would take
    hc.model_free(info.model)


def test_logprobs_and_tokenizer_match_transformers(hc, models_dir):
    root, models = models_dir
    info = hc.model_load("cpu", path="tiny-llama", kv_blocks=16)
    tok = hf_folders.folder_tokenizer(str(root / "tiny-llama"))
    text = "def main():\n    return héllo ✓"
    ids = tok(text)["input_ids"]
    assert hc.tokenize(info.model, text, special=True) == ids  # with the BOS Llama's tokenizer adds
    assert hc.tokenize(info.model, text) == ids[1:]
    assert hc.detokenize(info.model, ids) == tok.decode(ids, skip_special_tokens=True)
    got = torch.tensor(hc.logprobs(info.model, ids), dtype=torch.float64)
    with torch.no_grad():
        logits = models["tiny-llama"](torch.tensor([ids])).logits[0, :-1].double()
    want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    assert torch.allclose(got, want, atol=1e-4)
    with pytest.raises(LlmosError) as err:
        hc.detokenize(info.model, [10**6])
    assert err.value.errno == Errno.EINVAL
    hc.model_free(info.model)


def test_batched_generations_of_several_processes_match_one_by_one(hf_kernel, hc):
    info = hc.model_load("cpu", path="tiny-llama", kv_blocks=64)
    alone = [hc.generate(info.model, p, max_tokens=10).ids for p in PROMPTS]
    import asyncio

    from llmos.userland import AsyncClient

    async def together():
        async with AsyncClient(hf_kernel.address, name="together") as ac:
            shared = await ac.model_load("cpu", path="tiny-llama", kv_blocks=64)
            busy = await occupy_device(ac)  # all queue before the first step
            done = await asyncio.gather(*(ac.generate(shared.model, p, max_tokens=10) for p in PROMPTS))
            await busy
            return [d.ids for d in done], [d.shared_steps for d in done]

    ids, shared = asyncio.run(together())
    assert ids == alone and max(shared) > 0  # batched steps, the same greedy tokens
    hc.model_free(info.model)


def test_training_lowers_the_loss_and_an_hf_save_loads_in_transformers(hc, hf_kernel, models_dir):
    root, _ = models_dir
    info = hc.model_load("cpu", path="tiny-llama", kv_blocks=8)
    batch = [hc.tokenize(info.model, "def main():\n    return 1 + 2\n" * 3, special=True)[:33]] * 2
    losses = [hc.train_step(info.model, batch, lr=3e-3).loss for _ in range(6)]
    assert losses[-1] < losses[0]
    hc.model_save(info.model, "tuned")  # a folder-loaded model saves as a folder
    saved = os.path.join(runtime.kernel_dir(hf_kernel.config.name, hf_kernel.config.runtime_dir), "storage", "tuned")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(saved))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(saved).eval()
    ids = batch[0]
    with torch.no_grad():
        logits = theirs(torch.tensor([ids])).logits[0, :-1].double()
    want = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    ours = torch.tensor(hc.logprobs(info.model, ids), dtype=torch.float64)
    assert torch.allclose(ours, want, atol=1e-4)
    again = hc.model_load("cpu", checkpoint="tuned", kv_blocks=8)  # reloaded from the storage folder
    assert again.arch == "llama" and again.tokenizer == info.tokenizer
    assert hc.logprobs(again.model, ids) == hc.logprobs(info.model, ids)  # bit for bit
    # the audit trail names the folder by the digest of its manifest, which coreutils reproduce
    shell = "find -L . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum"
    digest = subprocess.run(["sh", "-c", shell], cwd=saved, capture_output=True, text=True, check=True).stdout.split()[0]
    folder = runtime.kernel_dir(hf_kernel.config.name, hf_kernel.config.runtime_dir)
    ours = lambda event: [line.record for line in auditlog.lines(folder)  # noqa: E731
                          if line.record and line.record["event"] == event and line.record["path"] == "tuned"]
    until(lambda: ours("checkpoint_load"))
    assert [r["sha256"] for r in ours("checkpoint_save") + ours("checkpoint_load")] == [digest, digest]
    hc.model_free(again.model)
    hc.model_free(info.model)


def test_bad_paths_and_folders_get_clear_errors(hc, hf_kernel, models_dir, runtime_dir):
    root, _ = models_dir
    cases = [
        (dict(path="../../etc"), Errno.EPERM),
        (dict(path="nowhere"), Errno.ENOENT),
        (dict(path="tiny-llama", arch="gpt2"), Errno.EINVAL),
        (dict(path="tiny-llama", checkpoint="x"), Errno.EINVAL),
        (dict(arch="auto"), Errno.EINVAL),
    ]
    odd = root / "odd"
    odd.mkdir(exist_ok=True)
    (odd / "config.json").write_text('{"model_type": "bert"}')
    cases.append((dict(path="odd"), Errno.EINVAL))
    empty = root / "empty"
    empty.mkdir(exist_ok=True)
    cases.append((dict(path="empty"), Errno.ENOENT))
    for kwargs, errno in cases:
        with pytest.raises(LlmosError) as err:
            hc.model_load("cpu", **kwargs)
        assert err.value.errno == errno, (kwargs, err.value.message)
        if kwargs == dict(path="odd"):
            assert "bert" in err.value.message and "llama" in err.value.message  # what is served instead
    kp = start_kernel(runtime_dir, "nomodels")
    try:
        with Client(kp.address, name="x") as c, pytest.raises(LlmosError) as err:
            c.model_load("cpu", path="tiny-llama")
        assert err.value.errno == Errno.EINVAL and "--models" in err.value.message
    finally:
        assert kp.stop() == 0


def test_llmos_run_generate_with_a_model_dir(hf_kernel, models_dir):
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "llmos.userland.cli.main", "run", "--kernel", "hf", "generate", "--model-dir", "tiny-llama",
         "--prompt", "def main():", "--max-tokens", "8"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "loaded tiny-llama (llama, float32" in out.stdout and "RESULT" in out.stdout


def run_program(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`llmos run --kernel hf ...` as a user types it."""
    cmd = [sys.executable, "-m", "llmos.userland.cli.main", "run", "--kernel", "hf", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


def test_chat_renders_the_folders_chat_template(hf_kernel):
    out = run_program("chat", "--model-dir", "tiny-llama", "--max-tokens", "6", stdin="hello there\n/quit\n")
    assert out.returncode == 0, out.stderr
    assert "(its chat template)" in out.stdout and "bye (1 replies)" in out.stdout


def test_eval_scores_a_folder_model_in_its_own_tokens(hf_kernel, tmp_path):
    text = tmp_path / "held.txt"
    text.write_text("def main():\n    return héllo\n" * 20)
    out = run_program("eval", "--model-dir", "tiny-llama", "--text", str(text), "--window", "32")
    assert out.returncode == 0, out.stderr
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")][-1]
    import json

    fields = json.loads(result[len("RESULT ") :])
    assert fields["perplexity"] > 1 and 0 < fields["bits_per_byte"] < 20 and fields["checkpoint"] == "tiny-llama"


SYSTEM = "You are a terse assistant who answers every question in one word. "


@pytest.mark.parametrize("preempt", ["recompute", "swap"])
def test_llama_prefix_hits_and_preemption_change_no_output(hf_kernel, hc, preempt):
    """A Llama folder (grouped-query attention, rotary positions) through the prefix cache, crowded enough to be
    preempted: greedy and seeded texts equal those of the same calls one by one with no cache."""
    import asyncio

    from llmos.userland import AsyncClient

    prompts = [SYSTEM + q for q in ("Sun?", "Moon?", "Rain?", "Snow?")]
    settings = [dict(), dict(temperature=0.9, seed=3)]
    solo_model = hc.model_load("cpu", path="tiny-llama", kv_blocks=64, block_size=4, cache=False)
    solo = [[hc.generate(solo_model.model, p, max_tokens=16, **kw).ids for p in prompts] for kw in settings]
    shared = len(hc.tokenize(solo_model.model, SYSTEM, special=True)) // 4  # full blocks every prompt starts with
    longest = max(len(hc.tokenize(solo_model.model, p, special=True)) for p in prompts) + 15
    hc.model_free(solo_model.model)
    blocks = shared + 2 * (-(-longest // 4) - shared)  # room for two calls at a time, not four
    swap = {"swap_blocks": 64} if preempt == "swap" else {}  # room for all: swap, never fall back to recompute
    info = hc.model_load("cpu", path="tiny-llama", kv_blocks=blocks, block_size=4, preempt=preempt, **swap)
    hc.generate(info.model, SYSTEM, max_tokens=1)  # fills and names the system prompt's blocks

    async def together(kw):
        async with AsyncClient(hf_kernel.address, name="crowd") as ac:
            mine = hc.share(info.model, ac.pid)
            busy = await occupy_device(ac)
            done = await asyncio.gather(*(ac.generate(mine, p, max_tokens=16, **kw) for p in prompts))
            await busy
            return done

    preemptions = 0
    for kw, alone in zip(settings, solo):
        done = asyncio.run(together(kw))
        assert [d.ids for d in done] == alone
        # a pool this tight evicts some of the cached prompt blocks, so not every call finds them all
        assert sum(d.cached for d in done) >= 4 * shared * 2
        assert sum(d.swaps for d in done) == (sum(d.preemptions for d in done) if preempt == "swap" else 0)
        preemptions += sum(d.preemptions for d in done)
    # counted over both settings: greedy calls may meet EOS after a few tokens and crowd nobody (the
    # tokenizer, and so what the random model says, follows this repository's ABI source: hf_folders.py)
    assert preemptions > 0
    hc.model_free(info.model)
