"""Reference solution of assignment 2: stride scheduling.

`make grade SOLUTIONS=1` puts it in a copy of the tree as
assignments/stride.py, the skeleton moved aside to
assignments/stride_skeleton.py; nothing imports it from here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from assignments.stride_skeleton import Stride as Skeleton
from llmos.services.scheduler.request import Sequence


class Stride(Skeleton):
    """Proportional share by stride scheduling: the smallest pass first."""

    def __init__(self, tickets: dict[int, int] | None = None) -> None:
        """No sequences yet; every pass starts at 0."""
        super().__init__(tickets)
        self.passes: dict[int, float] = {}
        self._queues: dict[int, dict[int, Sequence]] = {}  # pid -> runnable sequences, arrival order
        self._global = 0.0  # the pass of the last process whose work ran out

    def add(self, seq: Sequence, now: float) -> None:
        """Queue `seq`; a process with no runnable work comes back at the smallest pass of the busy ones."""
        pid = seq.pid
        if pid not in self._queues:
            floor = min((self.passes[p] for p in self._queues), default=self._global)
            self.passes[pid] = max(self.passes.get(pid, 0.0), floor)
        self._queues.setdefault(pid, {})[seq.rid] = seq

    def remove(self, seq: Sequence) -> None:
        """Drop `seq`; remember the pass of a process whose work ran out."""
        queue = self._queues.get(seq.pid)
        if queue is not None:
            queue.pop(seq.rid, None)
            if not queue:
                del self._queues[seq.pid]
                self._global = self.passes[seq.pid]

    def candidates(self, now: float) -> Iterator[Sequence]:
        """The next sequence of the process with the smallest pass, re-reading passes after each."""
        heap = [(self.passes[pid], pid) for pid in self._queues]
        heapq.heapify(heap)
        cursors = {pid: iter(list(queue.values())) for pid, queue in self._queues.items()}
        while heap:
            value, pid = heap[0]
            if value != self.passes[pid]:
                heapq.heapreplace(heap, (self.passes[pid], pid))
                continue
            seq = next(cursors[pid], None)
            if seq is None:
                heapq.heappop(heap)
                continue
            yield seq

    def rank(self, seq: Sequence):
        """(process pass, arrival, request id)."""
        return (self.passes[seq.pid], seq.request.arrival, seq.rid)

    def charge(self, seq: Sequence, prefill: int, emitted: int, now: float) -> None:
        """Advance the process's pass by its stride for every token fed or emitted."""
        self.passes[seq.pid] += self.stride(seq.pid) * (prefill + emitted)
