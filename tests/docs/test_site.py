"""The docs build as a site with mkdocs, strictly (no broken links, every page in the nav)."""

import pathlib
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
    assert (tmp_path / "site" / "concepts" / "index.html").is_file()


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
