"""RR: round robin with a token quantum.

Every sequence holds a ticket; the smallest tickets run. A sequence keeps its
ticket until it has been served `quantum` tokens (prefill tokens plus
generated tokens), then takes a fresh ticket behind everyone else. New sequences also
take a fresh ticket. Waiting is bounded: with at most N runnable sequences,
ample KV memory and a token budget of at least the sequence budget, a
runnable sequence is passed over for at most (N - 1) * quantum consecutive
ticks (each such tick feeds at least one token to a sequence ahead of it, and
each of the at most N - 1 sequences ahead leaves after `quantum` tokens).
"""

from __future__ import annotations

import itertools

from llmos.services.scheduler.policies.base import HeapPolicy
from llmos.services.scheduler.request import Sequence


class RoundRobin(HeapPolicy):
    """Round robin over sequences; `quantum` tokens per turn."""

    name = "rr"

    def __init__(self, quantum: int = 32) -> None:
        """Create the policy with a turn of `quantum` tokens."""
        if quantum < 1:
            raise ValueError("quantum must be >= 1")
        super().__init__()
        self.quantum = quantum
        self._tickets = itertools.count()
        self._ticket: dict[int, int] = {}
        self._used: dict[int, int] = {}

    def add(self, seq: Sequence, now: float) -> None:
        """Give `seq` a fresh ticket at the back of the queue."""
        self._ticket[seq.rid] = next(self._tickets)
        self._used[seq.rid] = 0
        super().add(seq, now)

    def remove(self, seq: Sequence) -> None:
        """Forget `seq` and its ticket."""
        self._ticket.pop(seq.rid, None)
        self._used.pop(seq.rid, None)
        super().remove(seq)

    def key(self, seq: Sequence, now: float) -> int:
        """The ticket of `seq`."""
        return self._ticket[seq.rid]

    def charge(self, seq: Sequence, prefill: int, emitted: int, now: float) -> None:
        """Count the tokens served (fed plus emitted) against the turn; a spent turn sends `seq` to the back."""
        used = self._used[seq.rid] + prefill + emitted
        if used >= self.quantum:
            used = 0
            self._ticket[seq.rid] = next(self._tickets)
        self._used[seq.rid] = used
