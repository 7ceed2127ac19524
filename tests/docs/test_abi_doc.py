"""docs/abi.md's syscall table and errno table say what the code says."""

import pathlib
import re

import msgspec

from llmos.syscalls import Errno
from llmos.syscalls.table import TABLE

DOC = pathlib.Path(__file__).parents[2] / "docs" / "abi.md"


def rows_after(heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after a heading."""
    text = DOC.read_text().split(heading, 1)[1]
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
        elif rows:
            break
    return [r for r in rows[1:] if not set("".join(r)) <= set("-: ")]


def test_syscall_table_matches_the_code():
    expected = [
        [
            str(int(s.nr)),
            s.name,
            s.family,
            ", ".join(f.name for f in msgspec.structs.fields(s.request)) or "-",
            s.reply.__name__,
            f"{s.bulk_in} / {s.bulk_out}",
            f"yes (`{s.partial.__name__}`)".strip("`") if s.streams else "no",
            s.rights_text,
        ]
        for s in TABLE
    ]
    documented = rows_after("## The syscall table")
    documented = [r[:6] + [re.sub(r"`", "", c) for c in r[6:]] for r in documented]
    expected = [r[:6] + [re.sub(r"`", "", c) for c in r[6:]] for r in expected]
    assert documented == expected


def test_errno_table_matches_the_code():
    documented = {row[0]: int(row[1]) for row in rows_after("## Errors")}
    assert documented == {e.name: int(e) for e in Errno}
