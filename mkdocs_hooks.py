"""mkdocs hooks: let mkdocstrings find the `llmos` package for the generated API pages.

`llmos` is a namespace package whose subpackages are this repository's top-level
folders (see setup.py), so there is no `llmos/` folder for mkdocstrings' static
analysis to read. `build/apiref/llmos/` gets one symlink per subpackage
(`build/` is ignored by git), and mkdocs.yml points mkdocstrings there. The
links are made when mkdocs loads this module, while it reads mkdocs.yml:
mkdocstrings drops search paths that do not exist when its plugin starts,
before any hook event.
"""

import os
import pathlib

ROOT = pathlib.Path(__file__).parent
TOP_LEVEL = ("syscalls", "kernel", "services", "drivers", "userland", "benchmarks", "testing")
APIREF = ROOT / "build" / "apiref" / "llmos"


def link_packages() -> None:
    """Make the symlink tree mkdocs.yml's mkdocstrings `paths` names."""
    APIREF.mkdir(parents=True, exist_ok=True)
    for top in TOP_LEVEL:
        link = APIREF / top
        if not link.is_symlink():
            os.symlink(os.path.relpath(ROOT / top, APIREF), link)


link_packages()
