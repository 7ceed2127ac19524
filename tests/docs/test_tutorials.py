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
