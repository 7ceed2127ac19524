"""The docs build as a site with mkdocs, strictly (no broken links, every page in the nav)."""

import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).parents[2]


def test_mkdocs_builds_strictly(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    site = tmp_path / "site"
    assert (site / "concepts.html").is_file()  # use_directory_urls: false, so links work from disk
    assert 'href="memory.html#labs"' in (site / "labs.html").read_text() or "memory.html#lab-5" in (site / "labs.html").read_text()
    assert "css/wrap.css" in (site / "labs.html").read_text()  # long commands wrap, not run off the page
    # the API pages are generated from the docstrings: what was only in docstrings is on the site
    client = (site / "api-client.html").read_text()
    for text in ("AsyncClient", "yield_", "driver_os_pid", "goes as several", "Move this process"):
        assert text in client, text
    plugin = (site / "api-plugins.html").read_text()
    for text in ("end_tick", "llmos_scheduler_policies", "first_token_at", "write_at"):
        assert text in plugin, text


def test_the_client_page_maps_every_syscall_to_its_method():
    from llmos.syscalls.table import TABLE
    from llmos.userland.api import SyscallApi

    page = (ROOT / "docs" / "api-client.md").read_text().split("## Method names and syscall names", 1)[1]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", page, re.M))
    assert list(rows) == [s.name for s in TABLE]
    for name, text in rows.items():
        if name not in ("attach", "exit"):  # the constructor and exit() are the clients' own
            method = re.match(r"`(\w+)\(", text).group(1)
            assert callable(getattr(SyscallApi, method, None)), f"{name}: no method {method}"


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)
        else:
            for item in node:
                yield from pages(item)

    assert set(pages(config["nav"])) == {p.name for p in (ROOT / "docs").glob("*.md")}
