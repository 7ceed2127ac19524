"""What a scheduling policy is: an ordering of the runnable sequences of one device.

The batching layer (`llmos.services.scheduler.batching.Scheduler`) owns the
sequences, the budgets and the KV blocks; a policy only answers "who next?".
Each tick the scheduler walks `candidates(now)` from the front, puts sequences
into the batch while the budgets allow, tells the policy how much service each
one got through `charge`, and closes the tick with `end_tick`. `rank` orders
sequences the same way `candidates` does (smaller runs first); the scheduler
uses it to choose preemption victims: the worst-ranked sequence holding KV.

`HeapPolicy` is the base for policies that order sequences by a per-sequence
key: a binary heap, from which a tick pops only the sequences it looks at
(about the batch size) and pushes them back with their new keys, so a tick
costs O(batch * log n), not O(n).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any, ClassVar

from llmos.services.scheduler.request import Sequence


class Policy:
    """Base class of scheduling policies; subclass it and register the class under `name`.

    Subclasses implement `add`, `remove`, `candidates` and `rank`, and may
    override `charge` and `end_tick`. A policy holds its own per-sequence
    state (keys, counters) and must not change the sequences themselves.
    """

    name: ClassVar[str] = ""

    def add(self, seq: Sequence, now: float) -> None:
        """Start ordering `seq`: it was submitted, or the scheduler switched to this policy."""
        raise NotImplementedError

    def remove(self, seq: Sequence) -> None:
        """Stop ordering `seq`: it finished or was cancelled."""
        raise NotImplementedError

    def candidates(self, now: float) -> Iterator[Sequence]:
        """Yield the runnable sequences best first; the scheduler stops when the batch is full.

        Between two yields the scheduler may call `charge`, and a policy may
        let that charge change the order of what it yields next.
        """
        raise NotImplementedError

    def rank(self, seq: Sequence) -> Any:
        """A sortable key of `seq` in the current order; smaller keys run first."""
        raise NotImplementedError

    def charge(self, seq: Sequence, prefill: int, emitted: int, now: float) -> None:
        """Record this tick's service to `seq`: `prefill` tokens fed, `emitted` output tokens.

        `prefill` counts prompt, recompute and training tokens; a decode feeds
        its last output token back and counts as `prefill=0, emitted=1`. The
        scheduler calls this at most once per sequence per tick.
        """

    def end_tick(self, now: float) -> None:
        """Close the tick: every sequence the tick looked at gets its place back."""


class HeapPolicy(Policy):
    """A policy ordered by `key(seq, now)`, kept in a heap with lazy deletion.

    Subclasses implement `key` and update whatever it reads in `charge`. A
    sequence's key is recomputed only when it enters (`add`) and when a tick
    has looked at it (`end_tick`); `rekey_all` recomputes every key, for
    policies whose order changes wholesale (MLFQ's priority boost).
    """

    def __init__(self) -> None:
        """Start with no sequences."""
        self._heap: list[tuple[Any, int, Sequence]] = []
        self._keys: dict[int, Any] = {}
        self._looked: list[Sequence] = []

    def key(self, seq: Sequence, now: float) -> Any:
        """The order key of `seq` now; smaller runs first."""
        raise NotImplementedError

    def add(self, seq: Sequence, now: float) -> None:
        """Key `seq` and put it in the heap."""
        key = self.key(seq, now)
        self._keys[seq.rid] = key
        heapq.heappush(self._heap, (key, seq.rid, seq))

    def remove(self, seq: Sequence) -> None:
        """Forget `seq`; its heap entry is dropped when it reaches the top."""
        self._keys.pop(seq.rid, None)
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._keys) + len(self._looked):
            self._compact()

    def _compact(self) -> None:
        keys = self._keys
        self._heap = [entry for entry in self._heap if entry[1] in keys]
        heapq.heapify(self._heap)

    def rekey_all(self, now: float) -> None:
        """Recompute the key of every sequence and rebuild the heap (O(n))."""
        keys, key = self._keys, self.key
        live = [entry[2] for entry in self._heap if entry[1] in keys] + self._looked
        self._looked = []
        self._heap = heap = [(key(seq, now), seq.rid, seq) for seq in live]
        self._keys = {rid: k for k, rid, _ in heap}
        heapq.heapify(heap)

    def candidates(self, now: float) -> Iterator[Sequence]:
        """Pop sequences best first; `end_tick` pushes them back."""
        heap, keys, looked = self._heap, self._keys, self._looked
        pop = heapq.heappop
        while heap:
            _, rid, seq = pop(heap)
            if rid not in keys:
                continue
            looked.append(seq)
            yield seq

    def rank(self, seq: Sequence) -> Any:
        """The stored key of `seq`, with its request id breaking ties."""
        return (self._keys[seq.rid], seq.rid)

    def end_tick(self, now: float) -> None:
        """Push back every sequence the tick popped, under its new key."""
        keys, heap, key = self._keys, self._heap, self.key
        push = heapq.heappush
        for seq in self._looked:
            if seq.rid in keys:
                k = key(seq, now)
                keys[seq.rid] = k
                push(heap, (k, seq.rid, seq))
        self._looked = []
