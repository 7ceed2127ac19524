"""Allocations waiting for device memory, and the rule that lets them pass each other without starving.

Pure bookkeeping, no I/O, like the rest of the memory service: the kernel
parks an allocation here when the device's memory service answers LATER,
asks `next_ready` after every free, and asks `admit` (instead of the memory
service alone) for every allocation on the device.

The rule:

1. **Skip ahead.** A waiting allocation that does not fit never holds back
   those behind it, nor new ones: whatever fits goes ahead. In particular a
   waiter whose own quota is full (only its own frees can help it) blocks
   nobody.
2. **Bounded bypass.** Each allocation admitted on the device while an
   earlier waiter waits for *device* memory (its own quota would allow it)
   counts as one bypass of that waiter. A waiter bypassed `max_bypass` times
   *reserves* its size: from then on an allocation that arrived after it is
   admitted only if it leaves the sizes of all the reserving waiters ahead of
   it free. So no waiter is bypassed more than `max_bypass` times; frees fill
   its reservation and it runs as soon as it fits.

A waiter blocked by its own quota neither counts bypasses nor reserves:
memory that others free cannot help it, so holding memory back for it would
only block them.
"""

import itertools
from dataclasses import dataclass, field

from .admission import Admission

MAX_BYPASS = 8
"""How many later allocations may go ahead of a waiter before it reserves its size."""


@dataclass(eq=False)
class Waiter:
    """One waiting allocation: who asks, how many bytes, the caller's payload, and how often it was passed."""

    owner: int
    size: int
    payload: object = None
    bypassed: int = 0
    arrival: int = 0


@dataclass
class WaitQueue:
    """The waiting allocations of one device, in arrival order."""

    max_bypass: int = MAX_BYPASS
    waiting: list[Waiter] = field(default_factory=list)
    _arrivals: itertools.count = field(default_factory=itertools.count, repr=False)

    def __len__(self) -> int:
        """How many allocations wait."""
        return len(self.waiting)

    def __iter__(self):
        """The waiters, in arrival order."""
        return iter(list(self.waiting))

    def add(self, owner: int, size: int, payload: object = None) -> Waiter:
        """Park an allocation of `size` bytes for `owner`."""
        w = Waiter(owner, size, payload, arrival=next(self._arrivals))
        self.waiting.append(w)
        return w

    def discard(self, w: Waiter) -> None:
        """Forget a waiter (its caller left)."""
        if w in self.waiting:
            self.waiting.remove(w)

    def clear(self) -> None:
        """Forget every waiter (the device went away)."""
        self.waiting.clear()

    @staticmethod
    def quota_blocked(memory, w: Waiter) -> bool:
        """True when the waiter's own quota, not the device, keeps it waiting."""
        return memory.by_owner.get(w.owner, 0) + w.size > memory.quota(w.owner)

    def _ahead(self, before: Waiter | None) -> list[Waiter]:
        """The waiters that arrived before `before` (all of them for a new allocation)."""
        if before is None:
            return self.waiting
        return [w for w in self.waiting if w.arrival < before.arrival]

    def reserved(self, memory, before: Waiter | None = None) -> int:
        """Bytes an allocation arriving after the waiters ahead of `before` must leave free."""
        return sum(
            w.size for w in self._ahead(before) if w.bypassed >= self.max_bypass and not self.quota_blocked(memory, w)
        )

    def check(self, memory, owner: int, size: int, before: Waiter | None = None) -> Admission:
        """The memory service's answer, made LATER where it would eat into a reservation; no side effect."""
        verdict = memory.admit(owner, size)
        if verdict is Admission.OK and memory.free - size < self.reserved(memory, before):
            return Admission.LATER
        return verdict

    def admit(self, memory, owner: int, size: int, before: Waiter | None = None) -> Admission:
        """`check`, and on OK count one bypass of every earlier waiter that waits for device memory."""
        if not self.waiting:  # nobody waits: the memory service's answer is the whole answer
            return memory.admit(owner, size)
        verdict = self.check(memory, owner, size, before)
        if verdict is Admission.OK:
            for w in self._ahead(before):
                if not self.quota_blocked(memory, w):
                    w.bypassed += 1
        return verdict

    def next_ready(self, memory) -> Waiter | None:
        """The earliest waiter admitted now (counted, and removed from the queue), or None."""
        for w in self.waiting:
            if self.admit(memory, w.owner, w.size, before=w) is Admission.OK:
                self.waiting.remove(w)
                return w
        return None
