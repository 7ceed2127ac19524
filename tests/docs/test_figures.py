"""The course's figures are drawn from the system itself, and the pages show them.

Each figure is drawn again here; the data it drew is checked against the
code (the worked example's printed tables, `llmos sim`'s trace, the kernel's
own process and device tables), and each page embeds its figure.
"""

import pathlib
import re

from llmos.userland.figures import blocktables, layout, tick

ROOT = pathlib.Path(__file__).parents[2]
DOCS = ROOT / "docs"


def test_block_tables_figure_shows_the_worked_examples_tables(tmp_path):
    data = blocktables.draw(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 10_000
    page = (DOCS / "memory.md").read_text()
    printed = page[page.index("Output:"):page.index(">>> free_owner")]
    steps = printed.split(">>> ")[1:]
    assert len(steps) == len(data)
    for text, (_, tables, ref) in zip(steps, data):
        assert dict(re.findall(r"(beam\d): +\d+ tokens, table (\[.*?\])", text)) == {s: str(t) for s, t in tables.items()}
        assert f"ref counts of blocks 0-5: {ref[:6]}" in text


def test_tick_figure_shows_the_simulators_ticks(tmp_path, capsys):
    from llmos.userland.cli.main import main

    data = tick.draw(tmp_path / "t.png")
    assert main(["sim", *tick.LAB4]) == 0
    trace = capsys.readouterr().out
    for t in data:
        line = re.search(rf"^tick +{t.tick} .*$", trace, re.M).group(0)
        assert [f"r{s.rid}" for s in t.served] == re.findall(r"(r\d+):", line.split("waiting")[0])
        assert sum(s.fed for s in t.served) <= tick.TOKENS and len(t.served) <= tick.SEQS
    assert sum(s.fed for s in data[0].served) == tick.TOKENS  # tick 1 spends the whole budget: a chunked prompt


def test_layout_figure_shows_the_live_kernels_processes_and_hosts(client, tmp_path):
    data = layout.draw(client, tmp_path / "l.png")
    assert (tmp_path / "l.png").stat().st_size > 10_000
    assert client.pid in {p["pid"] for p in data["processes"]}
    hosts = {d.name: d.driver_os_pid for d in client.devices() if d.state != "absent"}
    assert {d["name"]: d["os_pid"] for d in data["devices"]} == hosts and "cpu0" in hosts
    sockets = {"kernel/kernel.py": "zmq.ROUTER", "userland/client.py": "zmq.DEALER", "drivers/host.py": "zmq.DEALER"}
    for path, kind in sockets.items():  # the socket types the figure names
        assert kind in (ROOT / path).read_text(), path


def test_the_pages_show_their_figures():
    shown = {"memory.md": "memory-block-tables.png", "scheduler.md": "scheduler-ticks.png",
             "architecture.md": "process-layout.png", "observability.md": "demo-generate.png"}
    for page, image in shown.items():
        assert f"(images/{image})" in (DOCS / page).read_text(), page
        assert (DOCS / "images" / image).stat().st_size > 10_000, image
