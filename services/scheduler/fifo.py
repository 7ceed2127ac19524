"""A first-come first-served work queue per device: the first cut of the scheduler.

The kernel puts every piece of device work (alloc, free, read, write, op) on
its device's queue and gives the device the head item when it is idle, so a
device sees one process's calls in the order they were made, like a CUDA
stream. Pure: items are opaque to the queue except for their owner.
"""

from collections import deque
from collections.abc import Iterator
from typing import Any


class DeviceQueue:
    """FIFO of work items; each item has an `owner` attribute (a pid)."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()

    def push(self, item: Any) -> None:
        """Queue an item at the tail."""
        self._items.append(item)

    def pop(self) -> Any | None:
        """Take the head item, or None when the queue is empty."""
        return self._items.popleft() if self._items else None

    def requeue_to_tail(self, owner: int) -> int:
        """Move the owner's items behind everyone else's (sched_yield); returns how many moved."""
        mine = [item for item in self._items if item.owner == owner]
        if mine:
            self._items = deque(item for item in self._items if item.owner != owner)
            self._items.extend(mine)
        return len(mine)

    def drain(self) -> list[Any]:
        """Take every item out (the device went away)."""
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)
