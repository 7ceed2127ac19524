"""FCFS: first come, first served.

Sequences run in arrival order (request id breaks ties). A sequence keeps its
place until it finishes, so once it is in the batch it stays there: this is
the order of plain continuous batching (vLLM's default). Simple and efficient,
but a long request holds its slot for its whole life and a process that sends
many requests gets service in proportion to how many it sends.
"""

from __future__ import annotations

from llmos.services.scheduler.policies.base import HeapPolicy
from llmos.services.scheduler.request import Sequence


class FCFS(HeapPolicy):
    """First come, first served: the key is the arrival time."""

    name = "fcfs"

    def key(self, seq: Sequence, now: float) -> float:
        """Arrival time of the request."""
        return seq.request.arrival
