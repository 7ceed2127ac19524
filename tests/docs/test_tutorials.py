"""The tutorials' code runs as written."""

import pathlib
import re

DOCS = pathlib.Path(__file__).parents[2] / "docs"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_first_program_tutorial_runs(kernel, monkeypatch, capsys):
    monkeypatch.setenv("LLMOS_KERNEL", kernel.address)
    whole = [b for b in python_blocks("tutorial-first-program.md") if "assert torch.allclose" in b]
    assert len(whole) == 1
    exec(compile(whole[0], "tutorial-first-program.md", "exec"), {})
    assert "matches torch" in capsys.readouterr().out


def test_first_program_error_example_runs(kernel, monkeypatch):
    from llmos.userland import Client

    monkeypatch.setenv("LLMOS_KERNEL", kernel.address)
    (block,) = [b for b in python_blocks("tutorial-first-program.md") if "Errno.ENOMEM" in b]
    with Client(name="tutorial-errors") as c:
        exec(compile(block, "tutorial-first-program.md", "exec"), {"c": c})


def test_readme_example_runs(kernel, monkeypatch):
    monkeypatch.setenv("LLMOS_KERNEL", kernel.address)
    readme = (DOCS.parent / "README.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    exec(compile(block, "README.md", "exec"), {})


def test_model_program_tutorial_runs(kernel, monkeypatch, capsys):
    monkeypatch.setenv("LLMOS_KERNEL", kernel.address)
    (whole,) = [b for b in python_blocks("tutorial-model-program.md") if "train_step" in b and "model_free" in b]
    exec(compile(whole, "tutorial-model-program.md", "exec"), {})
    out = capsys.readouterr().out
    assert "step 20" in out and "greedy:" in out


def test_hf_model_tutorial_runs(runtime_dir, tmp_path, monkeypatch, capsys):
    from conftest import start_kernel

    make, use = python_blocks("tutorial-hf-model.md")
    monkeypatch.setenv("HOME", str(tmp_path))  # the tutorial writes ~/llmos-models/tiny-llama
    exec(compile(make, "tutorial-hf-model.md", "exec"), {})
    kp = start_kernel(runtime_dir, "tutorial-hf", models_dir=str(tmp_path / "llmos-models"))
    try:
        monkeypatch.setenv("LLMOS_KERNEL", kp.address)
        exec(compile(use, "tutorial-hf-model.md", "exec"), {})
    finally:
        assert kp.stop() == 0
    out = capsys.readouterr().out
    assert "heads 4 kv heads 2" in out and "text == detokenize(ids): True" in out and "reloaded llama" in out
