"""VTC: fair share between processes by a virtual token counter.

After Sheng et al., "Fairness in Serving Large Language Models" (OSDI 2024).
Each process has a counter of the service it received: `w_in` per token fed
(prompt, recompute, training) plus `w_out` per token generated. The process
with the smallest counter runs next (its sequences in arrival order); charges
are applied as the batch is built, so one tick interleaves processes.

A process is *backlogged* when it has a runnable sequence that a tick passed
over. When a process that is not backlogged gets a new request, its counter
is lifted to the smallest counter among backlogged processes; when none is
backlogged, to the smallest among the other processes with runnable work;
when there are none, to the counter of the last process whose work ran out.
So neither idling nor running below its share earns a process credit to
spend later at the others' expense.

Bound (stated for this iteration-level version, and checked by the property
tests): with ample KV memory, for two processes that are backlogged at the
end of every tick of an interval, the difference of the service they got in
that interval is at most 2 * U, with U = w_in * token_budget + w_out *
(2 * max_seqs + 1) -- the most a process can be charged above another in one
tick (one decode picked at an equal counter, plus every prefill token and
emitted token of the tick, which are charged when the token budget is shared
out at the end of batch building).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from llmos.services.scheduler.policies.base import Policy
from llmos.services.scheduler.request import Sequence


class VTC(Policy):
    """Virtual token counter: the least-served backlogged process first."""

    name = "vtc"

    def __init__(self, w_in: float = 1.0, w_out: float = 2.0) -> None:
        """Create the policy; `w_in` and `w_out` weigh fed and generated tokens."""
        if w_in < 0 or w_out < 0:
            raise ValueError("weights must be >= 0")
        self.w_in = w_in
        self.w_out = w_out
        self.counter: dict[int, float] = {}
        self._queues: dict[int, dict[int, Sequence]] = {}  # pid -> runnable sequences, arrival order
        self._backlogged: set[int] = set()
        self._last_left = 0.0
        self._served: dict[int, int] = {}  # pid -> sequences served this tick

    def gap_bound(self, token_budget: int, max_seqs: int) -> float:
        """The bound 2 * U on the service gap of two backlogged processes (see the module doc)."""
        return 2 * (self.w_in * token_budget + self.w_out * (2 * max_seqs + 1))

    def add(self, seq: Sequence, now: float) -> None:
        """Queue `seq` behind its process's other sequences; lift an idle process's counter."""
        pid = seq.pid
        if pid not in self._backlogged:
            others = self._backlogged or self._queues.keys() - {pid}
            floor = min((self.counter[p] for p in others), default=self._last_left)
            self.counter[pid] = max(self.counter.get(pid, 0.0), floor)
        self._queues.setdefault(pid, {})[seq.rid] = seq

    def remove(self, seq: Sequence) -> None:
        """Drop `seq` from its process's queue."""
        queue = self._queues.get(seq.pid)
        if queue is not None:
            queue.pop(seq.rid, None)
            if not queue:
                del self._queues[seq.pid]
                self._last_left = self.counter[seq.pid]

    def rank(self, seq: Sequence) -> tuple[float, int, float, int]:
        """(process counter, pid, arrival, request id): at equal counters the lower pid goes first, as in
        `candidates`, so the order `sched` shows is the order that runs."""
        return (self.counter[seq.pid], seq.pid, seq.request.arrival, seq.rid)

    def candidates(self, now: float) -> Iterator[Sequence]:
        """Yield the next sequence of the least-served process, re-reading counters after each."""
        counter = self.counter
        heap = [(counter[pid], pid) for pid in self._queues]
        heapq.heapify(heap)
        cursors = {pid: iter(queue.values()) for pid, queue in self._queues.items()}
        while heap:
            c, pid = heap[0]
            if c != counter[pid]:
                heapq.heapreplace(heap, (counter[pid], pid))
                continue
            seq = next(cursors[pid], None)
            if seq is None:
                heapq.heappop(heap)
                continue
            yield seq

    def charge(self, seq: Sequence, prefill: int, emitted: int, now: float) -> None:
        """Add the weighted tokens to the counter of the sequence's process."""
        self.counter[seq.pid] += self.w_in * prefill + self.w_out * emitted
        self._served[seq.pid] = self._served.get(seq.pid, 0) + 1

    def end_tick(self, now: float) -> None:
        """Recompute the backlogged set: processes with a runnable sequence this tick did not serve."""
        served = self._served
        self._backlogged = {pid for pid, queue in self._queues.items() if served.get(pid, 0) < len(queue)}
        self._served = {}

    @property
    def backlogged(self) -> frozenset[int]:
        """Processes that had a runnable sequence passed over by the last tick."""
        return frozenset(self._backlogged)
