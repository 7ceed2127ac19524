"""The kernel's recent timeline events, kept in memory for `trace_read`.

The debug log holds every event, but only when the kernel logs at debug
level, and only in a file a console may not be able to read. The ring keeps
the last `capacity` device, scheduling and KV events (never the per-syscall
ones, so the syscall path pays nothing) whatever the log level, numbered
from 1, so a reader asks for what came after the last number it saw.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

KEPT = ("device.", "sched.", "kv.")
"""The prefixes of the events the ring keeps: device work and state, preemption, swap, eviction, prefix lookups."""


class TraceRing:
    """A bounded, numbered log of `(seq, t, event, fields)`; the oldest events fall out first."""

    def __init__(self, capacity: int = 4096):
        self.events: deque[tuple[int, float, str, dict]] = deque(maxlen=capacity)
        self.next = 1  # the number the next event gets

    @staticmethod
    def keeps(event: str) -> bool:
        """Whether an event of this name goes into the ring."""
        return event.startswith(KEPT)

    def add(self, t: float, event: str, fields: dict) -> None:
        """Keep one event (the caller checked `keeps`)."""
        self.events.append((self.next, t, event, fields))
        self.next += 1

    def since(self, first: int) -> tuple[list[tuple[int, float, str, dict]], int]:
        """The kept events numbered `first` or later, and how many after `first` fell out of the ring already."""
        if not self.events:
            return [], 0
        oldest = self.events[0][0]
        skip = max(0, first - oldest)
        return list(islice(self.events, skip, None)), max(0, oldest - max(first, 1))
