"""Assignment 2: a stride-scheduling policy, graded by the policy property kit.

Stride scheduling (Waldspurger and Weihl, 1995) shares a device among
processes in proportion to their *tickets*. Each process has a *pass*, a
virtual time; the runnable process with the smallest pass runs next (its
sequences in arrival order), and every token it is served advances its pass
by its *stride*, `STRIDE1 / tickets`. So a process with three times the
tickets advances a third as fast and is served three times as much. As with
VTC, a process that had no runnable work and gets some must not come back
with credit: its pass is lifted to the smallest pass among the processes
that have runnable work (to the global pass when none has).

Write `Stride`: the `Policy` methods below (see
`llmos.services.scheduler.policies.base.Policy`, and `vtc.py` for a policy
built the same way). The grader (grading/graders/test_stride.py) runs the
property kit (`llmos.testing.PolicyProperties`: every request finishes once,
budgets hold, no idling, no starvation, ...) and checks that two
always-busy processes with 3 and 1 tickets get service in a 3 : 1 ratio.
Try it with `llmos sim --policy assignments.stride:Stride -s 1 -c`.
"""

from __future__ import annotations

from collections.abc import Iterator

from llmos.services.scheduler.policies.base import Policy
from llmos.services.scheduler.request import Sequence

STRIDE1 = 1 << 20
"""The stride of a process with one ticket."""


class Stride(Policy):
    """Proportional share by stride scheduling; `tickets` maps a pid to its tickets (default 1 each)."""

    name = "stride"

    def __init__(self, tickets: dict[int, int] | None = None) -> None:
        """Start with no sequences; `tickets[pid]` (default 1) sets each process's share."""
        self.tickets = dict(tickets or {})

    def stride(self, pid: int) -> float:
        """How far one token of service advances process `pid`'s pass."""
        return STRIDE1 / self.tickets.get(pid, 1)

    def _todo(self, what: str):
        raise NotImplementedError(
            f"assignment 2 is not done: write Stride.{what} in assignments/stride.py (docs/assignments.md)")

    def add(self, seq: Sequence, now: float) -> None:
        """Start ordering `seq`; lift its process's pass if it had no runnable work."""
        self._todo("add")

    def remove(self, seq: Sequence) -> None:
        """Stop ordering `seq` (it finished or was cancelled)."""
        self._todo("remove")

    def candidates(self, now: float) -> Iterator[Sequence]:
        """Runnable sequences, smallest pass first; re-read passes as `charge` moves them."""
        self._todo("candidates")

    def rank(self, seq: Sequence):
        """A sortable key of `seq`: (its process's pass, arrival, request id)."""
        self._todo("rank")

    def charge(self, seq: Sequence, prefill: int, emitted: int, now: float) -> None:
        """Advance the pass of `seq`'s process by its stride per token fed or emitted."""
        self._todo("charge")
