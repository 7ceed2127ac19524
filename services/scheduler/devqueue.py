"""The device work queue the kernel uses: a scheduling policy decides whose work runs next.

Everything the kernel asks of a device (allocations, copies, ops, frees)
goes through this queue, one item at a time. Items of one process stay in
the order it made them (like a CUDA stream); which process goes next is the
policy's choice. Each process with queued work is one `Sequence` of the
policy, and each item it gets through the device is charged as one unit of
service fed (`prefill=1`). So FCFS serves process streams in the order they
became busy, RR rotates between busy processes, VTC keeps the counts of
items served to busy processes level, and so on, with the very policies
`llmos sim` and the batching layer use.

Pure: the caller passes the time.
"""

from collections import deque
from collections.abc import Iterator
from typing import Any

from .policies.base import Policy
from .request import Request, Sequence


class PolicyQueue:
    """Per-process FIFOs of work items; `policy` picks the process. Items have an `owner` pid."""

    def __init__(self, policy: Policy):
        self.policy = policy
        self._queues: dict[int, deque] = {}
        self._seqs: dict[int, Sequence] = {}
        self._next_rid = 1

    def push(self, item: Any, now: float) -> None:
        """Queue an item behind its owner's earlier items."""
        owner = item.owner
        queue = self._queues.get(owner)
        if queue is None:
            queue = self._queues[owner] = deque()
            self._enter(owner, now)
        queue.append(item)

    def _enter(self, owner: int, now: float) -> None:
        seq = Sequence(Request(self._next_rid, owner, now, prompt_len=1, output_len=1))
        self._next_rid += 1
        self._seqs[owner] = seq
        self.policy.add(seq, now)

    def _leave(self, owner: int) -> None:
        self.policy.remove(self._seqs.pop(owner))
        del self._queues[owner]

    def pop(self, now: float) -> Any | None:
        """The head item of the process the policy picks, or None when nothing is queued."""
        for seq in self.policy.candidates(now):
            queue = self._queues[seq.pid]
            item = queue.popleft()
            self.policy.charge(seq, 1, 0, now)
            self.policy.end_tick(now)
            if not queue:
                self._leave(seq.pid)
            return item
        self.policy.end_tick(now)
        return None

    def requeue_to_tail(self, owner: int, now: float) -> int:
        """sched_yield: the owner's work re-enters as if it had just arrived; returns how many items."""
        queue = self._queues.get(owner)
        if not queue:
            return 0
        self.policy.remove(self._seqs.pop(owner))
        self._enter(owner, now)
        return len(queue)

    def set_policy(self, policy: Policy, now: float) -> None:
        """Switch policies; queued work is handed over in the order processes became busy."""
        for seq in self._seqs.values():
            policy.add(seq, now)
        self.policy = policy

    def order(self) -> list[tuple[int, deque]]:
        """Each busy process and its queued items, in the policy's current order (who would go first, first)."""
        ranked = sorted(self._seqs.items(), key=lambda kv: self.policy.rank(kv[1]))
        return [(owner, self._queues[owner]) for owner, _ in ranked]

    def drain(self) -> list[Any]:
        """Take every item out (the device went away)."""
        items = list(self)
        for owner in list(self._queues):
            self._leave(owner)
        return items

    def __bool__(self) -> bool:
        """Whether any item is queued (without counting them: a process's FIFO leaves once empty)."""
        return bool(self._queues)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __iter__(self) -> Iterator[Any]:
        for queue in self._queues.values():
            yield from queue
