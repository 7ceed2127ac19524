"""The process and socket layout of a running system: the kernel, its driver hosts and its clients.

Drawn from a live kernel through syscalls (`stat`, `devices`, `ps`), so it
shows what really runs: the kernel process binds one ZeroMQ ROUTER socket
(`kernel.sock` in its private runtime folder); every driver host (one OS
process per device) and every client process connects a DEALER socket to
it. Nothing talks to anything but the kernel.
"""

from __future__ import annotations

from pathlib import Path

from llmos.userland.figures.draw import box, pyplot, save


def snapshot(client) -> dict:
    """What the figure shows, read from the kernel `client` is attached to."""
    stat = client.stat()
    return {
        "kernel": {"name": stat.name, "os_pid": stat.os_pid, "address": client.address},
        "devices": [{"name": d.name, "state": d.state, "os_pid": d.driver_os_pid}
                    for d in client.devices() if d.state != "absent"],
        "processes": [{"pid": p.pid, "name": p.name, "os_pid": p.os_pid} for p in client.ps()],
    }


def draw(client, path: str | Path) -> dict:
    """Write the layout of `client`'s kernel to `path`; the snapshot it shows."""
    plt = pyplot()
    data = snapshot(client)
    rows = max(len(data["devices"]), len(data["processes"]), 1)
    fig, ax = plt.subplots(figsize=(11, 1.0 + 0.9 * rows))
    ky = rows * 0.9 / 2 - 0.45
    k = data["kernel"]
    box(ax, 4.0, ky, 3.0, 0.9, f"kernel '{k['name']}' (OS pid {k['os_pid']})\nROUTER socket: kernel.sock", "#cab2d6")
    for i, p in enumerate(data["processes"]):
        y = i * 0.9
        box(ax, 0.0, y, 2.6, 0.7, f"pid {p['pid']} {p['name']}\n(OS pid {p['os_pid']}), DEALER", "#a6cee3", 8)
        ax.annotate("", (4.0, ky + 0.45), (2.6, y + 0.35), arrowprops={"arrowstyle": "-", "color": "grey"})
    for i, d in enumerate(data["devices"]):
        y = i * 0.9
        box(ax, 8.4, y, 2.6, 0.7, f"driver host of {d['name']} ({d['state']})\n(OS pid {d['os_pid']}), DEALER",
            "#fdbf6f", 8)
        ax.annotate("", (7.0, ky + 0.45), (8.4, y + 0.35), arrowprops={"arrowstyle": "-", "color": "grey"})
    ax.set_xlim(-0.2, 11.2)
    ax.set_ylim(-0.3, rows * 0.9)
    ax.axis("off")
    ax.set_title("Processes and sockets: clients (left) and driver hosts (right) each connect one DEALER socket "
                 "to the kernel's ROUTER;\nno process talks to another but through the kernel", fontsize=10)
    save(fig, path)
    return data
