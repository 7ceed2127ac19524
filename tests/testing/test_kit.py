"""The user testing kit on the worked example of docs/scheduler.md: it catches SJF starving long jobs."""

import re
from pathlib import Path

import pytest
from hypothesis import settings
from llmos.testing import PolicyProperties

DOC = Path(__file__).resolve().parents[2] / "docs" / "scheduler.md"


def doc_examples() -> dict:
    """Execute the `# docs-example:` code blocks of docs/scheduler.md and return their names."""
    blocks = re.findall(r"```python\n(# docs-example: \w+\n.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 -- the code shown in the docs is what runs
    return namespace


EXAMPLES = doc_examples()
PROPERTY_NAMES = sorted(n for n in dir(PolicyProperties) if n.startswith("test_"))


def test_the_kit_catches_shortest_job_first_starving_long_jobs():
    suite = EXAMPLES["TestShortestJobFirst"]()
    with pytest.raises(AssertionError, match="consecutive ticks"):
        suite.test_no_starvation_under_a_stream_of_short_requests()


@pytest.mark.parametrize("name", [n for n in PROPERTY_NAMES if "starvation" not in n])
def test_shortest_job_first_passes_the_other_properties(name):
    getattr(EXAMPLES["TestShortestJobFirst"](), name)()


@pytest.mark.parametrize("name", PROPERTY_NAMES)
def test_aged_shortest_job_first_passes_every_property(name):
    getattr(EXAMPLES["TestAgedShortestJobFirst"](), name)()


def test_aged_shortest_job_first_passes_the_state_machine():
    case = EXAMPLES["TestAgedShortestJobFirstMachine"]
    case.settings = settings(max_examples=10, stateful_step_count=25, deadline=None, derandomize=True)
    case("runTest").runTest()
