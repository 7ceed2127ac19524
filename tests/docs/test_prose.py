"""The prose says what the code does: worked examples are run, quoted constants are read from the code.

A page that quotes a figure of the code (a default, a budget, a constant)
drifts the day the code changes; these tests fail that day instead. Each
quote is found by a pattern around it, so rewording the sentence is fine but
changing the number without the code is not.
"""

import contextlib
import inspect
import io
import pathlib
import re

import pytest

from llmos.drivers import costmodel
from llmos.kernel.batcher import MULTI_STEP
from llmos.kernel.config import KernelConfig
from llmos.services.memory.kv import KVCache
from llmos.services.scheduler.batching import Budget
from llmos.userland.cli.main import build_parser

DOCS = pathlib.Path(__file__).parents[2] / "docs"
KERNEL = pathlib.Path(__file__).parents[2] / "kernel"


def page(name: str) -> str:
    return (DOCS / name).read_text()


def test_memory_worked_example_prints_what_the_page_shows():
    text = page("memory.md")
    start = text.index("A worked example, run against the real code")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    shown = re.search(r"Output:\n\n```\n(.*?)```", text[start:], re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "memory.md", "exec"), {})
    assert out.getvalue() == shown


def _sim_default(option: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["sim"]
    return next(a.default for a in sub._actions if option in a.option_strings)


KV_DEFAULTS = inspect.signature(KVCache.__init__).parameters

# (page, a pattern whose group 1 is the quoted number, the code's value)
QUOTES = [
    ("architecture.md", r"plans up to (\d+) more decode ticks", MULTI_STEP - 1),
    ("architecture.md", r"once per (\d+)\s+tokens of a lone stream", MULTI_STEP),
    ("observability.md", r"up to\s+(\d+) of them carried together \(`MULTI_STEP`", MULTI_STEP),
    ("abi.md", r"carries up to (\d+) decode steps in one work item", MULTI_STEP),
    ("benchmarks.md", r"decode steps run (\d+) to a work item", MULTI_STEP),
    ("glossary.md", r"plans up to `MULTI_STEP - 1` \((\d+)\)", MULTI_STEP - 1),
    ("glossary.md", r"once per (\d+) tokens of a lone\s+stream", MULTI_STEP),
    ("glossary.md", r"blocks of `block_size` tokens \((\d+) by default\)", KV_DEFAULTS["block_size"].default),
    ("memory.md", r"blocks\*\* of `block_size` tokens \((\d+) by default\)", KV_DEFAULTS["block_size"].default),
    ("memory.md", r"blocks \((\d+)% by default\), free", round(KV_DEFAULTS["watermark"].default * 100)),
    ("glossary.md", r"A fraction of a KV pool \((\d+)% by default\)", round(KV_DEFAULTS["watermark"].default * 100)),
    ("glossary.md", r"`lease_s` seconds \((\d+) by default\)", KernelConfig().lease_s),
    ("scheduler.md", r"Budget\(tokens=(\d+), seqs=\d+\)", Budget().tokens),
    ("scheduler.md", r"Budget\(tokens=\d+, seqs=(\d+)\)", Budget().seqs),
    ("scheduler.md", r"\(`DeviceSpec.host_bandwidth`, (\d+) GB/s on the\s+mock TPU\)",
     costmodel.PRESETS["mocktpu"].host_bandwidth / 1e9),
    ("scheduler.md", r"a\s+block crosses the host link \((\d+) GB/s on the mock TPU",
     costmodel.PRESETS["mocktpu"].host_bandwidth / 1e9),
    ("scheduler.md", r"a whole prefill chunk \(up to the (\d+)-token budget\)", _sim_default("--token-budget")),
    ("scheduler.md", r"two processes, and the batch holds\s+two sequences", None),
]


@pytest.mark.parametrize("name,pattern,value", QUOTES, ids=[f"{q[0]}:{q[1][:30]}" for q in QUOTES])
def test_quoted_constant_matches_the_code(name, pattern, value):
    match = re.search(pattern, page(name))
    assert match, f"{name} no longer says {pattern!r}: update the page and this test together"
    if value is not None:
        assert float(match.group(1)) == value, f"{name} quotes {match.group(1)}, the code has {value}"
    else:
        assert _sim_default("--max-seqs") == 2  # 'the batch holds two sequences' under llmos sim's defaults


def test_boot_log_events_quoted_in_the_tutorial_are_logged_by_the_kernel():
    text = page("tutorial-first-program.md")
    paragraph = text[text.index("The kernel prints JSON log lines"):text.index("Leave it running")]
    events = re.findall(r"`([a-z]+\.[a-z]+)`", paragraph)
    assert {"kernel.boot", "kernel.ready", "device.online", "device.starting"} <= set(events)
    source = "".join(p.read_text() for p in KERNEL.glob("*.py"))
    for event in events:
        assert f'"{event}"' in source, f"the tutorial quotes {event}, which the kernel never logs"


def test_glossary_links_resolve_and_key_words_link_to_it():
    glossary = page("glossary.md")
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^### (.*)$", glossary, re.M)}
    for md in DOCS.glob("*.md"):
        for anchor in re.findall(r"glossary\.md#([a-z0-9-]+)", md.read_text()):
            assert anchor in anchors, f"{md.name} links to a glossary entry that does not exist: {anchor}"
    first_uses = {"scheduler.md": ["anchor", "backlogged", "tick"], "memory.md": ["watermark", "copy-on-write"],
                  "architecture.md": ["lookahead"], "observability.md": ["work-item"],
                  "tutorial-model-program.md": ["claim-token"]}
    for name, words in first_uses.items():
        for word in words:
            assert f"glossary.md#{word}" in page(name), f"{name} does not link '{word}' to the glossary"


def test_no_page_points_at_files_outside_the_repository():
    for md in DOCS.glob("*.md"):
        assert "../shared/" not in md.read_text(), md.name
