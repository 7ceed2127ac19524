"""What the figures share: a matplotlib figure with the Agg backend, and boxes with text."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot with the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def box(ax, x: float, y: float, w: float, h: float, text: str, colour: str, size: int = 9) -> None:
    """A filled rectangle at (x, y) of w x h with `text` centred in it."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", facecolor=colour, edgecolor="black"))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=size)


def save(fig, path: str | Path) -> None:
    """Write `fig` to `path` as a PNG and close it."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
