"""Draw a `Timeline` as a PNG: a Gantt chart of who ran on each device, and memory over time.

Top: one row per device that did something (a device with no work and no
event gets no row), a bar per piece of work coloured by the process it ran
for (a batched step, of the kernel or the simulator, stacks the processes it
served in the row), red lines where a device went offline or restarted,
ticks where a generation was preempted (orange), swapped out or in (purple)
and where cached KV blocks were evicted (brown). Below, each only when it
has something to show: the KV blocks the devices' models hold (they come and
go with every sequence, where a model's memory is taken once at its load),
each device's memory in use (devices whose use changed), and, when models
looked prompts up in the prefix cache, its hit rate so far. matplotlib is
imported here only, with the Agg backend (no display).
"""

from __future__ import annotations

from pathlib import Path

from .timeline import Timeline

KERNEL_GREY = "#9e9e9e"
TICKS = {"preempt": "darkorange", "swap out": "purple", "swap in": "purple", "evict": "saddlebrown"}
"""Instants drawn as small ticks under a device's row (they can be many), by colour; the others are red lines."""
BAR = 0.8  # height of a device row's bars


def _scale(tl: Timeline) -> tuple[float, str]:
    """Time multiplier and axis label, in ms when the run is shorter than 2 s."""
    if tl.end() < 2.0:  # both units end in "s"
        return 1e3, f"time ({tl.unit[:-1]}ms)"
    return 1.0, f"time ({tl.unit})"


def _memory_scale(tl: Timeline) -> tuple[float, str]:
    if tl.memory_unit != "bytes":
        return 1.0, tl.memory_unit
    peak = max((used for points in tl.memory.values() for _, used in points), default=0)
    for div, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if peak >= div:
            return 1.0 / div, name
    return 1.0, "bytes"


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def plot(tl: Timeline, path: str | Path) -> None:
    """Write the Gantt chart and memory plot of `tl` to the PNG file `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    k, xlabel = _scale(tl)
    pids = sorted({s.pid for s in tl.work} - {0})
    cmap = plt.get_cmap("tab10" if len(pids) <= 10 else "tab20")
    colour = {pid: cmap(i % cmap.N) for i, pid in enumerate(pids)}
    colour[0] = KERNEL_GREY
    busy = {s.device for s in tl.work} | {i.device for i in tl.instants if i.device}
    rows = {d: i for i, d in enumerate([d for d in tl.devices if d in busy] or tl.devices)}
    changing = {d: points for d, points in tl.memory.items() if len({used for _, used in points}) > 1}
    kinds = ["kv"] * bool(tl.kv) + ["memory"] * bool(changing or not tl.kv) + ["prefix"] * bool(tl.prefix)
    fig, (gantt, *below) = plt.subplots(
        1 + len(kinds), 1, sharex=True, figsize=(11, 2.2 + 0.7 * len(rows) + 2.6 * len(kinds)),
        height_ratios=[0.6 + 0.7 * len(rows)] + [2.6] * len(kinds),
    )  # fmt: skip
    panel = dict(zip(kinds, below))
    for s in tl.work:
        low, high = s.share
        y = rows[s.device] - BAR / 2 + low * BAR
        gantt.broken_barh([(s.start * k, (s.end - s.start) * k)], (y, (high - low) * BAR), facecolors=colour[s.pid])
    for i in tl.instants:
        if i.device in rows and i.name in TICKS:
            gantt.plot(i.t * k, rows[i.device] + 0.45, marker="|", color=TICKS[i.name], markersize=8)
        elif i.device in rows:
            gantt.vlines(i.t * k, rows[i.device] - 0.5, rows[i.device] + 0.5, colors="red", linestyles="dashed")
            gantt.annotate(i.name, (i.t * k, rows[i.device] + 0.45), color="red", fontsize=8)
    gantt.set_yticks(range(len(rows)), list(rows))
    gantt.set_ylim(len(rows) - 0.5, -0.5)
    gantt.set_title(f"{tl.title}: who ran on each device")
    legend = [Patch(color=colour[pid], label=tl.process_name(pid)) for pid in pids]
    if any(s.pid == 0 for s in tl.work):
        legend.append(Patch(color=KERNEL_GREY, label="kernel (frees, pings)"))
    gantt.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    gantt.grid(axis="x", alpha=0.3)
    if "kv" in panel:
        ax = panel["kv"]
        for d, points in tl.kv.items():
            ax.step([t * k for t, _ in points], [used for _, used in points], where="post",
                    label=f"{d} (of {tl.kv_total.get(d, 0)} blocks)")
        ax.set_ylabel("KV blocks in use")
        ax.set_ylim(bottom=0)
        ax.set_title("paged KV cache: blocks held by the sequences of each device's models")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    if "memory" in panel:
        mem = panel["memory"]
        m, munit = _memory_scale(tl)
        for d, points in (changing or tl.memory).items():
            points = sorted(points)
            label = d
            if tl.capacity.get(d):
                label += f" (capacity {_human(tl.capacity[d])})"
            mem.step([t * k for t, _ in points], [used * m for _, used in points], where="post", label=label)
        mem.set_ylabel(f"in use ({munit})")
        mem.set_ylim(bottom=0)
        mem.set_title("memory occupancy")
        mem.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        mem.grid(alpha=0.3)
    for ax in [panel["prefix"]] if "prefix" in panel else []:
        for d in tl.prefix:
            points = tl.hit_rate(d)
            ax.step([t * k for t, _ in points], [r for _, r in points], where="post", label=d)
        ax.set_ylabel("hit rate (%)")
        ax.set_ylim(0, 100)
        ax.set_title("prefix cache: prompt tokens found / looked up, so far")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    (below or [gantt])[-1].set_xlabel(xlabel)
    gantt.set_xlim(left=0, right=max(tl.end(), 1e-9) * k)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
