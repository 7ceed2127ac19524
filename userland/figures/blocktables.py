"""Block tables and reference counts, step by step, for memory.md's worked example.

The same calls as the page's example, on the memory service's `KVCache` (8
blocks of 4 tokens): after each, every sequence's table and every block's
count, drawn as one row per step.
"""

from __future__ import annotations

from pathlib import Path

from llmos.services.memory.kv import KVCache
from llmos.userland.figures.draw import box, pyplot, save

STEPS = [
    ('allocate("beam0", 1, range(10))', lambda kv: kv.allocate("beam0", 1, range(10))),
    ('fork("beam0", "beam1")', lambda kv: kv.fork("beam0", "beam1")),
    ('append("beam1", [42])', lambda kv: kv.append("beam1", [42])),
    ('append("beam0", [7])', lambda kv: kv.append("beam0", [7])),
    ('append_many(...)', lambda kv: kv.append_many([("beam0", [8, 9]), ("beam1", [43, 44])])),
]


def states() -> list[tuple[str, dict[str, list[int]], list[int]]]:
    """(call, tables by sequence, reference counts) after each step of the worked example."""
    kv = KVCache(num_blocks=8, block_size=4, watermark=0)
    out = []
    for call, do in STEPS:
        do(kv)
        out.append((call, {s: kv.block_table(s) for s in kv.sequences()}, kv.snapshot()["ref"]))
    return out


def draw(path: str | Path) -> list[tuple[str, dict[str, list[int]], list[int]]]:
    """Write the figure to `path`; the states it shows."""
    plt = pyplot()
    data = states()
    fig, ax = plt.subplots(figsize=(11, 1.3 * len(data)))
    colours = {"beam0": "#a6cee3", "beam1": "#fdbf6f"}
    for row, (call, tables, ref) in enumerate(data):
        y = (len(data) - 1 - row) * 1.3
        ax.text(0, y + 0.55, call, fontsize=9, family="monospace", va="center")
        for block, count in enumerate(ref):
            holders = [s for s, table in tables.items() if block in table]
            colour = "#dddddd" if not holders else colours[holders[0]] if len(holders) == 1 else "#b2df8a"
            box(ax, 4.8 + block * 0.8, y + 0.25, 0.7, 0.6, f"{block}\nref {count}", colour, 8)
        text = "   ".join(f"{s}: {table}" for s, table in tables.items())
        ax.text(11.4, y + 0.55, text, fontsize=9, family="monospace", va="center")
    ax.set_xlim(0, 17)
    ax.set_ylim(-0.2, 1.3 * len(data))
    ax.axis("off")
    ax.set_title("KVCache(8 blocks of 4 tokens): blocks with their reference counts after each call "
                 "(blue: beam0's, orange: beam1's, green: shared)", fontsize=10)
    save(fig, path)
    return data
