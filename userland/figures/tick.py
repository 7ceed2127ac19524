"""The anatomy of scheduler ticks: how the token and sequence budgets were spent, tick by tick.

Lab 4's workload (`llmos sim --policy fcfs -s 6 -n 10 --rate 0 --max-seqs 4
--token-budget 64`) runs through the scheduler service, and its first ticks
are drawn as bars of the token budget: each sequence's share, a decode (one
token) or a prefill chunk, in the order the scheduler placed them (decodes
first, then the prompts sharing what is left, the last one cut).
"""

from __future__ import annotations

from pathlib import Path

from llmos.services.scheduler import sim as simulator
from llmos.services.scheduler.policies.fcfs import FCFS
from llmos.userland.cli import sim as cli
from llmos.userland.cli.main import build_parser
from llmos.userland.figures.draw import box, pyplot, save

TOKENS, SEQS, TICKS = 64, 4, 4
LAB4 = ["--policy", "fcfs", "-s", "6", "-n", "10", "--rate", "0", "--max-seqs", str(SEQS), "--token-budget", str(TOKENS)]


def ticks() -> list[simulator.TickRecord]:
    """The first ticks of Lab 4's run, as `llmos sim` makes and records them."""
    args = build_parser().parse_args(["sim", *LAB4])
    return cli.simulate(args, FCFS)[2].ticks[:TICKS]


def draw(path: str | Path) -> list[simulator.TickRecord]:
    """Write the figure to `path`; the ticks it shows."""
    plt = pyplot()
    data = ticks()
    fig, ax = plt.subplots(figsize=(11, 1.1 * len(data) + 0.6))
    for row, t in enumerate(data):
        y = (len(data) - 1 - row) * 1.1
        ax.text(-1, y + 0.4, f"tick {t.tick}", ha="right", va="center", fontsize=9)
        x = 0
        for s in t.served:
            colour = "#fdbf6f" if s.decode else "#a6cee3"
            label = f"r{s.rid}\ndecode" if s.decode else f"r{s.rid} [{s.start}:{s.start + s.fed}]" + ("+tok" if s.emitted else "")
            box(ax, x, y, s.fed, 0.8, label if s.fed >= 6 else f"r{s.rid}", colour, 8)
            x += s.fed
        if x < TOKENS:
            box(ax, x, y, TOKENS - x, 0.8, "unused" if TOKENS - x >= 8 else "", "#eeeeee", 8)
        ax.text(TOKENS + 1, y + 0.4, f"{len(t.served)}/{SEQS} sequences, {x}/{TOKENS} tokens", va="center", fontsize=9)
    ax.set_xlim(-8, TOKENS + 22)
    ax.set_ylim(-0.2, 1.1 * len(data))
    ax.axis("off")
    ax.set_title(f"One tick = one model step: the token budget ({TOKENS}) and the sequence budget ({SEQS}) of Lab 4's "
                 "first ticks\n(orange: decodes, placed first; blue: prompt chunks sharing what is left, "
                 "the last one cut: chunked prefill)", fontsize=10)
    save(fig, path)
    return data
