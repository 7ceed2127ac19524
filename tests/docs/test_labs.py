"""Every lab runs as written and is answerable: each command prints questions, and with -c the answers.

Labs live at the end of their chapters; labs.md lists them. Each lab section
has a key for its *why* questions, and each listed lab resolves to its
section.
"""

import pathlib
import re
import shlex

import pytest

from llmos.userland.cli.main import main

from conftest import start_kernel

DOCS = pathlib.Path(__file__).parents[2] / "docs"
CHAPTERS = ("scheduler.md", "memory.md", "models.md", "architecture.md", "drivers.md")


def lab_sections() -> dict[str, str]:
    """'Lab N: title' -> the text of its section, from every chapter."""
    sections = {}
    for name in CHAPTERS:
        text = (DOCS / name).read_text()
        for match in re.finditer(r"^### (Lab \d+: [^\n]*)\n(.*?)(?=^##|\Z)", text, re.S | re.M):
            sections[match.group(1)] = match.group(2)
    return sections


SECTIONS = lab_sections()
COMMANDS = sorted({line for body in SECTIONS.values() for block in re.findall(r"```sh\n(.*?)```", body, re.S)
                   for line in block.splitlines() if line.startswith("llmos sim")})


def test_every_chapter_ends_with_its_labs():
    for name in CHAPTERS:
        headings = re.findall(r"^## (.*)$", (DOCS / name).read_text(), re.M)
        assert headings[-1] == "Labs", name
    assert len(SECTIONS) == 17 and {int(t.split()[1].rstrip(":")) for t in SECTIONS} == set(range(1, 18))


def test_every_lab_has_a_key_and_is_listed():
    index = (DOCS / "labs.md").read_text()
    for title, body in SECTIONS.items():
        assert "<summary>Key</summary>" in body or "<summary>Answers</summary>" in body, title
        number = title.split()[1].rstrip(":")
        row = re.search(rf"^\| {number} \|.*\(([a-z]+\.md)#([a-z0-9-]+)\) \|$", index, re.M)
        assert row, title
        slug = re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")  # as mkdocs makes it
        assert row.group(2) == slug and f"### {title}" in (DOCS / row.group(1)).read_text()


def test_the_labs_have_sim_commands():
    assert len(COMMANDS) >= 12
    assert any(" --static" in c for c in COMMANDS) and any(c.startswith("llmos sim paging") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_lab_command_runs_and_answers(command, capsys):
    args = shlex.split(command)[1:]
    assert main(args) == 0
    assert "Compute" in capsys.readouterr().out  # without -c: questions
    assert main([*args, "-c"]) == 0
    out = capsys.readouterr().out
    assert "Answers" in out
    if args[1] not in ("paging", "prefix", "admit", "lifecycle"):
        assert "Jain" in out and "Per tick:" in out


def key_output(lab: int) -> list[str]:
    """The output a lab's key quotes (its first code block inside the key)."""
    body = next(b for t, b in SECTIONS.items() if t.startswith(f"Lab {lab}:"))
    return re.search(r"<summary>Key</summary>\n\n```\n(.*?)```", body, re.S).group(1).splitlines()


def shape(line: str) -> str:
    """A line with its numbers masked: pids and free bytes change from run to run."""
    return re.sub(r"\d+", "N", line)


def what_if(c, scenario: str) -> list[str]:
    """Spawn `whatif SCENARIO` from `c`, wait for it, and return its output's lines with numbers masked."""
    out = []
    child = c.spawn("whatif", [scenario])
    assert c.wait(child.pid, on_output=out.append).status == 0, "".join(out)
    return [shape(line) for line in "".join(out).splitlines()]


@pytest.mark.parametrize("scenario,lab", [("handle", 11), ("token", 12), ("quota", 13)])
def test_what_if_labs_print_what_their_keys_say(client, scenario, lab):
    assert what_if(client, scenario) == [shape(line) for line in key_output(lab)]


@pytest.fixture(scope="module")
def whatif_kernel(runtime_dir):
    """A kernel of its own for the labs that break things: a short lease (the lab waits out the default
    15 s), mocktpu to unload, and a restart backoff long enough that a call right after the crash
    always finds cpu0 offline (the lab's key shows that moment)."""
    kp = start_kernel(runtime_dir, "whatif", drivers=["cpu", "mocktpu"], lease_s=2.0, restart_backoff_s=(0.5, 5.0))
    yield kp
    assert kp.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("scenario,lab", [("lease", 14), ("crash", 15), ("unload", 16)])
def test_what_if_labs_that_break_things_print_what_their_keys_say(whatif_kernel, scenario, lab):
    from llmos.userland import Client

    with Client(whatif_kernel.address, name="test") as c:
        assert what_if(c, scenario) == [shape(line) for line in key_output(lab)]
