"""The timeline: who ran on which device when, each process's calls, memory over time.

Times are seconds from the start of the recording (`Timeline.unit` says
whether they are wall seconds or simulated ones). A device slice may share
its time with others (a batched tick of the simulator): `share` is the part
of the device it had, as a (low, high) fraction, so a plot can stack them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class Slice:
    """Something that took time on a track: device work (`device` set) or a call of process `pid`."""

    start: float
    end: float
    pid: int
    name: str
    device: str | None = None
    args: dict = field(default_factory=dict)
    share: tuple[float, float] = (0.0, 1.0)


@dataclass
class Instant:
    """A moment on a device's track (`device` set) or a process's: an exit, a restart, a preemption."""

    t: float
    name: str
    pid: int | None = None
    device: str | None = None
    args: dict = field(default_factory=dict)


@dataclass
class Timeline:
    """Everything a trace or a plot shows, from a kernel log or a simulator run."""

    unit: str = "s"  # "s" for wall seconds, "simulated s" for the simulator's virtual time
    title: str = "llmos"
    processes: dict[int, str] = field(default_factory=dict)  # pid -> name
    devices: list[str] = field(default_factory=list)
    work: list[Slice] = field(default_factory=list)  # device work
    calls: list[Slice] = field(default_factory=list)  # process tracks: syscalls (or a simulated request's life)
    instants: list[Instant] = field(default_factory=list)
    memory: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # device -> (t, used)
    memory_unit: str = "bytes"
    capacity: dict[str, int] = field(default_factory=dict)
    # device -> (t, prompt tokens its models looked up in the prefix cache so far, of which found)
    prefix: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)
    kv: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # device -> (t, its models' KV blocks in use)
    kv_total: dict[str, int] = field(default_factory=dict)  # device -> its models' KV blocks in all

    def hit_rate(self, device: str) -> list[tuple[float, float]]:
        """The prefix-cache hit rate of `device`'s models over time: (t, percent of the prompt tokens looked up
        so far that were found in the cache), one point per lookup."""
        return [(t, 100.0 * found / looked if looked else 0.0) for t, looked, found in self.prefix.get(device, [])]

    def process_name(self, pid: int) -> str:
        """How a process is called in traces and legends: `pid 3 matmul`, `kernel` for pid 0."""
        if pid == 0:
            return "kernel"
        name = self.processes.get(pid)
        return f"pid {pid} {name}" if name else f"pid {pid}"

    def window(self, start: float, end: float) -> "Timeline":
        """The part of the timeline between `start` and `end`, shifted to begin at 0 (slices cut at the edges)."""

        def cut(slices: list[Slice]) -> list[Slice]:
            return [
                replace(s, start=max(s.start, start) - start, end=min(s.end, end) - start)
                for s in slices
                if s.end > start and s.start < end
            ]

        def held(series: dict[str, list[tuple[float, int]]]) -> dict[str, list[tuple[float, int]]]:
            out = {}  # a step series: the value at the window's start, its changes, held to the window's end
            for device, points in series.items():
                before = [value for t, value in points if t <= start]
                kept = [(0.0, before[-1] if before else 0)] + [(t - start, v) for t, v in points if start < t <= end]
                out[device] = [*kept, (end - start, kept[-1][1])]
            return out

        return replace(
            self, title=f"{self.title}, {start:.1f}-{end:.1f} {self.unit}", work=cut(self.work), calls=cut(self.calls),
            instants=[replace(i, t=i.t - start) for i in self.instants if start <= i.t <= end], memory=held(self.memory),
            kv=held(self.kv),
            prefix={d: [(t - start, n, hit) for t, n, hit in points if start <= t <= end] for d, points in self.prefix.items()},
        )  # fmt: skip

    def end(self) -> float:
        """The time of the last thing on the timeline."""
        times = [s.end for s in self.work + self.calls] + [i.t for i in self.instants]
        times += [t for points in self.memory.values() for t, _ in points]
        return max(times, default=0.0)


def lanes(slices: list[Slice]) -> list[int]:
    """A lane number (0, 1, ...) per slice, so that slices in one lane never overlap.

    Trace viewers need the slices of one thread properly nested; calls of one
    process can overlap (a client's heartbeat thread calls while the main one
    waits), so overlapping ones go to further lanes.
    """
    order = sorted(range(len(slices)), key=lambda i: (slices[i].start, -slices[i].end))
    free_at: list[float] = []  # lane -> the end of its last slice
    out = [0] * len(slices)
    for i in order:
        s = slices[i]
        lane = next((n for n, end in enumerate(free_at) if end <= s.start), len(free_at))
        if lane == len(free_at):
            free_at.append(s.end)
        else:
            free_at[lane] = s.end
        out[i] = lane
    return out
