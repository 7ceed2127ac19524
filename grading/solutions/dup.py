"""Reference solution of assignment 1: the `dup` syscall, end to end.

Not a file to copy: the syscall touches seven files of the system, so this
module edits them in a copy of the tree (`apply(root)`), each edit anchored
on text that stays put when other syscalls are added, and the number is the
next free one. `make grade SOLUTIONS=1` calls it; nothing imports it
otherwise.
"""

from __future__ import annotations

import pathlib
import re

MESSAGES = '''

class Dup(Call, tag=int(Sys.DUP)):
    """Open a second handle, in the caller's own table, on the tensor behind `handle`."""

    handle: int
'''

HANDLER = '''

def sys_dup(k: Kernel, c: CallCtx) -> None:
    """A second handle on the caller's tensor: it stays valid when the first is freed."""
    t = k.tensor(c.proc, c.req.handle)
    t.holders[c.proc.pid] += 1
    handle = c.proc.add_handle(t.tid)
    c.reply(m.TensorRef(handle=handle, device=t.device, shape=t.shape, dtype=t.dtype, nbytes=t.nbytes))
'''

CLIENT = '''    def dup(self, handle: int):
        """A second handle on the same tensor in this process (TensorRef); freeing one leaves the other."""
        return self._run(one_call(m.Dup(handle=handle)))

'''


def _insert_before(path: pathlib.Path, anchor: str, text: str) -> None:
    """Put `text` just before the first `anchor` in the file."""
    source = path.read_text()
    if anchor not in source:
        raise ValueError(f"{path}: anchor {anchor!r} not found; the tree changed under the solution")
    path.write_text(source.replace(anchor, text + anchor, 1))


def _append_row(path: pathlib.Path, heading: str, row: str) -> None:
    """Add `row` after the last row of the first table under `heading`."""
    lines = path.read_text().split("\n")
    at = lines.index(heading)
    while not lines[at].startswith("|"):
        at += 1
    while at < len(lines) and lines[at].startswith("|"):
        at += 1
    lines.insert(at, row)
    path.write_text("\n".join(lines))


def apply(root: pathlib.Path) -> None:
    """Add `dup` to the tree at `root`: number, message, table row, handler, dispatch, client method, docs."""
    numbers = root / "syscalls" / "numbers.py"
    nr = max(int(n) for n in re.findall(r"^    [A-Z_]+ = (\d+)$", numbers.read_text(), re.M)) + 1
    numbers.write_text(numbers.read_text().rstrip("\n") + f"\n    # memory: a second handle\n    DUP = {nr}\n")
    messages = root / "syscalls" / "messages.py"
    messages.write_text(messages.read_text().rstrip("\n") + "\n" + MESSAGES)
    _insert_before(root / "syscalls" / "table.py", ")\n\nBY_NR", '    Syscall(Sys.DUP, "memory", m.Dup, m.TensorRef),\n')
    sysmem = root / "kernel" / "sysmem.py"
    sysmem.write_text(sysmem.read_text().rstrip("\n") + "\n" + HANDLER)
    _insert_before(root / "kernel" / "dispatch.py", "}\n\n# by request type", "    Sys.DUP: sysmem.sys_dup,\n")
    _insert_before(root / "userland" / "api.py", "    def handles(self", CLIENT)
    _append_row(root / "docs" / "abi.md", "## The syscall table",
                f"| {nr} | `dup` | memory | handle | `TensorRef` | 0 / 0 | no | - |")
    _append_row(root / "docs" / "api-client.md", "## Method names and syscall names", "| `dup` | `dup(handle)` |")
