"""Every `llmos sim` command of the labs runs, and with -c prints the answers."""

import pathlib
import re
import shlex

import pytest

from llmos.userland.cli.main import main

LABS = (pathlib.Path(__file__).parents[2] / "docs" / "labs.md").read_text()
COMMANDS = [line for block in re.findall(r"```sh\n(.*?)```", LABS, re.S) for line in block.splitlines() if line.startswith("llmos sim")]


def test_the_labs_have_sim_commands():
    assert len(COMMANDS) >= 5


@pytest.mark.parametrize("command", COMMANDS)
def test_lab_command_runs_and_answers(command, capsys):
    args = shlex.split(command)[1:]
    assert main(args) == 0
    assert "Compute" in capsys.readouterr().out  # without -c: questions
    assert main([*args, "-c"]) == 0
    out = capsys.readouterr().out
    assert "Answers" in out and "Jain" in out
