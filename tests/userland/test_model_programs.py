"""The model programs (train, generate, eval, compress, loadgen, chat) against a kernel, with a tiny model.

The train run is spawned by the kernel, as `llmos run` does; the others run
in this process (their `Client()` attaches through $LLMOS_KERNEL), which
keeps the file quick. Loadgen spawns its generate children for real.
"""

import io
import math
import os
import shutil
import time

import pytest

from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError
from llmos.userland.cli import main as cli
from llmos.userland.programs import chat, compress, evaluate, generate, loadgen, train
from llmos.userland.programs.common import parse_result
from llmos.userland.programs.perplexity import window_starts
from llmos.userland.programs.progress import Progress, Ticker

from conftest import start_kernel

TINY = ["--d-model", "32", "--layers", "2", "--heads", "2"]
CHECKPOINT = "tiny.safetensors"


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return str(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small, very repetitive corpus: a tiny model learns it in a few steps."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "adder.py").write_text("def add(a, b):\n    return a + b\n\n" * 300)
    return str(folder)


@pytest.fixture(scope="module")
def pkernel(runtime_dir, storage):
    kp = start_kernel(runtime_dir, "programs", storage_dir=storage)
    yield kp
    assert kp.stop() == 0


@pytest.fixture
def attached(pkernel, monkeypatch):
    """Programs run in this process attach to the test kernel."""
    monkeypatch.setenv("LLMOS_KERNEL", pkernel.address)
    return pkernel


def spawned(c: Client, program: str, args: list[str], models: list[int] | None = None) -> tuple[int, str]:
    """Run a program as the kernel's child, like `llmos run`: (exit status, output)."""
    child = c.spawn(program, args, models=models)
    out: list[str] = []
    return c.wait(child.pid, on_output=out.append).status, "".join(out)


def in_process(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Run a program's main here: (exit status, stdout, stderr)."""
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def trained(pkernel, corpus):
    """Train the tiny model once, spawned by the kernel: (its RESULT, its output)."""
    args = ["--corpus", corpus, "--steps", "30", "--batch", "8", "--window", "32", *TINY, "--lr", "1e-2",
            "--warmup", "2", "--eval-windows", "4", "--every", "10", "--out", CHECKPOINT]  # fmt: skip
    with Client(pkernel.address, name="test-train") as c:
        status, out = spawned(c, "train", args)
    assert status == 0, out
    return parse_result(out), out


def test_train_writes_a_checkpoint_and_its_loss_falls(trained, storage):
    result, out = trained
    assert "ARG steps 30" in out and "\r" not in out  # the arguments first; no carriage returns in a log
    assert result["steps"] == 30 and result["checkpoint"] == CHECKPOINT
    assert result["last_loss"] < 0.6 * result["first_loss"]
    assert math.isfinite(result["perplexity"]) and result["perplexity"] > 1 and result["tokens_per_s"] > 0
    assert os.path.isfile(os.path.join(storage, CHECKPOINT))


def test_the_same_seed_trains_the_same_model_bit_for_bit(attached, trained, storage, corpus, capsys):
    import torch

    from llmos.drivers.models.checkpoint import load_checkpoint

    args = ["--corpus", corpus, "--steps", "30", "--batch", "8", "--window", "32", *TINY, "--lr", "1e-2",
            "--warmup", "2", "--eval-windows", "4", "--out", "again.safetensors"]  # fmt: skip
    status, out, _ = in_process(train.main, args, capsys)
    assert status == 0 and parse_result(out)["last_loss"] == trained[0]["last_loss"]
    first, again = (load_checkpoint(os.path.join(storage, name)) for name in (CHECKPOINT, "again.safetensors"))
    assert first.model_state.keys() == again.model_state.keys() and first.step == again.step == 30
    assert all(torch.equal(first.model_state[k], again.model_state[k]) for k in first.model_state)


def test_resume_continues_from_the_saved_step(attached, trained, storage, corpus, capsys):
    shutil.copy(os.path.join(storage, CHECKPOINT), os.path.join(storage, "resumed.safetensors"))
    args = ["--corpus", corpus, "--steps", "34", "--batch", "8", "--window", "32", *TINY, "--eval-windows", "2",
            "--out", "resumed.safetensors", "--resume"]  # fmt: skip
    status, out, _ = in_process(train.main, args, capsys)
    result = parse_result(out)
    assert status == 0 and "resuming resumed.safetensors at step 30" in out
    assert (result["start_step"], result["steps"]) == (30, 34)
    assert result["first_loss"] < trained[0]["first_loss"]  # it went on learning, not from scratch


def test_greedy_generate_is_deterministic_and_a_seed_fixes_sampling(attached, trained, capsys):
    greedy = ["--checkpoint", CHECKPOINT, "--prompt", "def add", "--max-tokens", "12", "--kv-blocks", "4"]
    runs = [in_process(generate.main, greedy, capsys) for _ in range(2)]
    first, second = (parse_result(out) for _, out, _ in runs)
    assert runs[0][0] == runs[1][0] == 0 and first["tokens"] == 12
    assert first["text"] == second["text"] and "def add" + first["text"] in runs[0][1]  # streamed after the prompt
    sampled = greedy + ["--temperature", "1.0", "--seed", "3"]
    texts = {parse_result(in_process(generate.main, sampled, capsys)[1])["text"] for _ in range(2)}
    assert len(texts) == 1


def test_generate_with_an_inherited_model_handle(pkernel, trained):
    with Client(pkernel.address, name="test-parent") as c:
        info = c.model_load("cpu", "tinygpt", checkpoint=CHECKPOINT, kv_blocks=16)
        mine = c.generate(info.model, "def add", max_tokens=12).text
        status, out = spawned(c, "generate", ["--model", str(info.model), "--prompt", "def add", "--max-tokens", "12"],
                              models=[info.model])  # fmt: skip
        assert status == 0, out
        assert parse_result(out)["text"] == mine and "loaded" not in out  # it used the handle, loaded nothing
        assert c.generate(info.model, "def add", max_tokens=12).text == mine  # and did not free the parent's model
        c.model_free(info.model)


def test_eval_prints_a_finite_perplexity(attached, trained, corpus, tmp_path, capsys):
    args = ["--checkpoint", CHECKPOINT, "--corpus", corpus, "--eval-windows", "4"]
    status, out, _ = in_process(evaluate.main, args, capsys)
    held = parse_result(out)
    assert status == 0 and "perplexity" in out and held["windows"] == 4
    assert 1 < held["perplexity"] < 259 and held["bits_per_byte"] > 0
    text = tmp_path / "other.txt"
    text.write_text("def add(a, b):\n    return a + b\n" * 4)
    status, out, _ = in_process(evaluate.main, ["--checkpoint", CHECKPOINT, "--text", str(text)], capsys)
    assert status == 0 and parse_result(out)["windows"] == len(window_starts(len(text.read_bytes()), 32, 32))


def test_compress_reports_saves_and_the_saved_model_generates_and_scores(attached, trained, corpus, capsys):
    scored = ["--corpus", corpus, "--eval-windows", "4"]
    status, out, _ = in_process(compress.main, ["--checkpoint", CHECKPOINT, "--scheme", "int4", "--group-size", "16",
                                                *scored], capsys)  # fmt: skip
    done = parse_result(out)
    assert status == 0 and done["out"] == "tiny-int4.safetensors" and done["compression"] == "int4/g16"
    assert "perplexity (32-token windows)" in out and "back to the device for anyone" in out
    assert done["bytes_ratio"] == done["bytes_after"] / done["bytes_before"] < 0.5 and done["tok_s_ratio"] > 0
    status, out, _ = in_process(evaluate.main, ["--checkpoint", CHECKPOINT, *scored], capsys)
    assert math.isclose(parse_result(out)["perplexity"], done["perplexity_before"], rel_tol=1e-9)  # eval's windows
    status, out, _ = in_process(evaluate.main, ["--checkpoint", done["out"], *scored], capsys)
    assert math.isclose(parse_result(out)["perplexity"], done["perplexity_after"], rel_tol=1e-9)
    status, out, _ = in_process(generate.main, ["--checkpoint", done["out"], "--prompt", "def ", "--max-tokens", "8"], capsys)
    assert status == 0 and parse_result(out)["tokens"] == 8
    status, out, _ = in_process(compress.main, ["--checkpoint", CHECKPOINT, "--scheme", "prune30", *scored], capsys)
    assert status == 0 and parse_result(out)["compression"] == "sparse/unstructured"
    for bad in (["--scheme", "int3"], ["--scheme", "int8", "--group-size", "16"], ["--scheme", "prune100"]):
        with pytest.raises(SystemExit) as usage:
            compress.main(["--checkpoint", CHECKPOINT, *bad])
        assert usage.value.code == 2


def test_loadgen_runs_processes_that_share_one_model(attached, trained, capsys):
    # a fresh model with room for 150 tokens: long enough that the three calls overlap, however their starts spread
    args = ["--fresh", *TINY, "--max-len", "160", "--procs", "3", "--prompts", "def add", "--max-tokens", "150"]
    status, out, err = in_process(loadgen.main, args, capsys)
    assert status == 0, err
    result = parse_result(out)
    assert result["procs"] == 3 and result["identical"] and "p50" in out and "p95" in out
    assert len({r["text"] for r in result["results"]}) == 1 and len({r["pid"] for r in result["results"]}) == 3
    assert all(r["shared_steps"] > 0 for r in result["results"])  # they generated in the same batched steps
    assert result["tokens_per_s"] > 0 and len(result["per_proc_tokens_per_s"]) == 3
    assert all(r["cached"] == 0 for r in result["results"])  # 7-byte prompts fill no 16-token block


def test_loadgen_with_a_system_prompt_shares_its_blocks(attached, trained, capsys):
    system = "Answer in one word: "  # 20 bytes: 1 full block of 16 (the model's max_len is 32)
    args = ["--checkpoint", CHECKPOINT, "--procs", "3", "--prompts", "a,b,c", "--system", system, "--max-tokens", "4"]
    status, out, err = in_process(loadgen.main, args, capsys)
    assert status == 0, err
    result = parse_result(out)
    assert [r["cached"] for r in result["results"]] == [16, 16, 16]  # loadgen warmed them: every call finds them
    plain = parse_result(in_process(generate.main, ["--checkpoint", CHECKPOINT, "--prompt", system + "b",
                                                    "--max-tokens", "4"], capsys)[1])  # fmt: skip
    assert plain["cached"] == 0 and plain["text"] == result["results"][1]["text"]
    assert "48 context tokens came from the prefix cache" in out


def test_loadgen_ends_the_children_it_started_when_a_spawn_fails(attached, trained, monkeypatch, capsys):
    real_spawn, started = Client.spawn, []

    def spawn(self, program, args=None, **kw):  # the third spawn is refused, as a full process table would
        if len(started) == 2:
            raise LlmosError(Errno.EAGAIN, "the process table is full")
        child = real_spawn(self, program, args, **kw)
        started.append(child.pid)
        return child

    monkeypatch.setattr(Client, "spawn", spawn)
    args = ["--checkpoint", CHECKPOINT, "--procs", "3", "--max-tokens", "200"]
    status, _, err = in_process(loadgen.main, args, capsys)
    assert status == 1 and "EAGAIN" in err and len(started) == 2
    with Client(name="checker") as c:
        running = {p.pid for p in c.ps() if p.state != "exited"}
    assert not running & set(started)  # both children were ended, not left generating


def test_chat_answers_each_line_and_quits(attached, trained, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\nhow are you\n/quit\nnever read\n"))
    status, out, _ = in_process(chat.main, ["--checkpoint", CHECKPOINT, "--max-tokens", "8"], capsys)
    assert status == 0 and out.count("model: ") == 2 and "bye (2 replies)" in out and "never read" not in out


def test_llmos_run_runs_an_interactive_program_in_its_own_process(pkernel, trained, monkeypatch, capsys):
    monkeypatch.delenv("LLMOS_KERNEL", raising=False)  # `llmos run --kernel programs` names it
    monkeypatch.setenv("LLMOS_PROGRAM", "pytest")  # put back afterwards: the command sets both
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))  # then the end of the input
    status = cli.main(["run", "--kernel", "programs", "chat", "--checkpoint", CHECKPOINT, "--max-tokens", "4"])
    out = capsys.readouterr().out
    assert status == 0 and "model: " in out and "bye (1 replies)" in out
    cli.main(["run", "--list"])
    assert "(interactive)" in next(line for line in capsys.readouterr().out.splitlines() if line.startswith("chat"))


def test_bad_input_is_a_clear_error(attached, trained, capsys):
    status, _, err = in_process(generate.main, ["--checkpoint", CHECKPOINT, "--device", "nosuch"], capsys)
    assert status == 1 and "no device 'nosuch'" in err and "ENODEV" in err
    status, _, err = in_process(evaluate.main, ["--checkpoint", "missing.safetensors"], capsys)
    assert status == 1 and "no checkpoint 'missing.safetensors'" in err
    status, _, err = in_process(train.main, ["--corpus", "/nonexistent", "--steps", "1"], capsys)
    assert status == 1 and "no Python sources" in err
    with pytest.raises(SystemExit) as usage:
        train.main(["--steps", "0"])
    assert usage.value.code == 2


def test_progress_redraws_on_a_tty_and_prints_lines_in_a_log():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, log = Tty(), io.StringIO()
    for out, every in ((tty, 5.0), (log, 0.0)):
        bar = Progress(steps=10, seconds=None, first_step=0, tokens_per_step=64, out=out, every_s=every)
        for step in range(1, 4):
            bar.update(step, 5.0 - step)
        bar.close()
    assert tty.getvalue().count("\r") == 3 and "step 3/10" in tty.getvalue() and "ETA" in tty.getvalue()
    assert "\r" not in log.getvalue() and len(log.getvalue().splitlines()) == 3


def test_ticker_redraws_on_a_tty_and_prints_lines_in_a_log():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, log = Tty(), io.StringIO()
    for out in (tty, log):
        with Ticker("work", out=out, every_s=0.4):
            time.sleep(1.1)
    assert tty.getvalue().startswith("work...") and "\rwork... 0:01" in tty.getvalue() and "\rwork: 1.1 s" in tty.getvalue()
    assert "\r" not in log.getvalue() and log.getvalue().splitlines()[:2] == ["work... 0:00", "work... 0:00"]
    assert log.getvalue().splitlines()[-1].startswith("work: 1.")


def test_learning_rate_warms_up_then_decays():
    lrs = [train.learning_rate(1.0, 4, step, step / 20) for step in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4] > lrs[12] > lrs[20] == pytest.approx(train.MIN_LR)
