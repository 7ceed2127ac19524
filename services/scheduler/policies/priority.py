"""Priority with aging.

Higher `Request.priority` runs first, and age earns priority: the effective
priority of a request at time t is priority + aging * (t - arrival), so an old
low-priority request eventually outranks newer high-priority ones. Comparing
two requests, the common aging * t term cancels, which leaves the static key
aging * arrival - priority (smaller runs first): the heap never needs
re-keying, and among equal priorities the order is first come, first served.

Bound: a request is never passed over in favour of one that arrived more
than (p_max - p_min) / aging seconds after it (p_min, p_max: the lowest and
highest priorities in use), so it waits at most for the work of the requests
that arrived before that horizon -- no starvation. Ranked sequences keep
their place once running, so aging does not make sequences take turns (and
thrash KV memory) the way per-tick aging would. With `aging = 0` this is
strict priority, which can starve.
"""

from __future__ import annotations

from llmos.services.scheduler.policies.base import HeapPolicy
from llmos.services.scheduler.request import Sequence


class PriorityAging(HeapPolicy):
    """Highest effective priority first; a request gains `aging` levels per second of age."""

    name = "priority"

    def __init__(self, aging: float = 10.0) -> None:
        """Create the policy; `aging` is priority levels gained per second since arrival."""
        if aging < 0:
            raise ValueError("aging must be >= 0")
        super().__init__()
        self.aging = aging

    def key(self, seq: Sequence, now: float) -> float:
        """aging * arrival - priority: smaller means higher effective priority."""
        return self.aging * seq.request.arrival - seq.request.priority
