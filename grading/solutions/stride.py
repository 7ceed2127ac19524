"""Reference solution of assignment 2: stride scheduling.

Stride scheduling is VTC with a weight per process: VTC's counter is the
pass, and every token served advances it by the process's stride instead of
a fixed weight. So the reference reuses VTC (its queues, its lift of a
process that comes back from idleness, its re-read of counters while a batch
is built) and only scales each charge.

`make grade SOLUTIONS=1` puts it in a copy of the tree as
assignments/stride.py, the skeleton moved aside to
assignments/stride_skeleton.py; nothing imports it from here.
"""

from __future__ import annotations

from assignments.stride_skeleton import Stride as Skeleton
from llmos.services.scheduler.policies.vtc import VTC
from llmos.services.scheduler.request import Sequence


class Stride(VTC, Skeleton):
    """Proportional share by stride scheduling: VTC's machinery, each charge times the process's stride."""

    name = "stride"

    def __init__(self, tickets: dict[int, int] | None = None) -> None:
        """VTC with weight 1 per token; `tickets[pid]` (default 1) sets each process's share."""
        VTC.__init__(self, w_in=1.0, w_out=1.0)
        Skeleton.__init__(self, tickets)

    @property
    def passes(self) -> dict[int, float]:
        """Each process's pass: VTC's counter."""
        return self.counter

    def charge(self, seq: Sequence, prefill: int, emitted: int, now: float) -> None:
        """Advance the process's pass by its stride for every token fed or emitted."""
        stride = self.stride(seq.pid)
        super().charge(seq, prefill * stride, emitted * stride, now)
