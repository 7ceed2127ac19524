"""MLFQ: multi-level feedback queue, with token allotments and a periodic boost.

The rules of the classic MLFQ (Corbato; as taught in OSTEP), with tokens for
time: a new sequence enters the top level 0; levels run in order, round robin
within a level; a sequence that has been fed its level's allotment
(`quantum * 2**level` tokens) moves down one level; every `boost` seconds all
sequences go back to level 0. Short requests (chats) finish in the top levels
while long prompts and generations sink; the boost bounds how long a sunk
sequence can wait.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from llmos.services.scheduler.policies.base import HeapPolicy
from llmos.services.scheduler.request import Sequence

LEVEL_SHIFT = 48  # a key's level sits above its ticket's bits
TICKET_MASK = (1 << LEVEL_SHIFT) - 1


class MLFQ(HeapPolicy):
    """Multi-level feedback queue over `levels` levels."""

    name = "mlfq"

    def __init__(self, levels: int = 4, quantum: int = 16, boost: float = 1.0) -> None:
        """Create the policy: `levels` levels, allotment `quantum * 2**level`, boost every `boost` s."""
        if levels < 1 or quantum < 1 or boost <= 0:
            raise ValueError("need levels >= 1, quantum >= 1, boost > 0")
        super().__init__()
        self.levels = levels
        self.quantum = quantum
        self.boost = boost
        self._tickets = itertools.count()
        self._slot: dict[int, int] = {}  # rid -> level << LEVEL_SHIFT | ticket: the order key
        self._used: dict[int, int] = {}
        self._last_boost = 0.0

    def add(self, seq: Sequence, now: float) -> None:
        """Put `seq` at the back of level 0."""
        self._slot[seq.rid] = next(self._tickets)
        self._used[seq.rid] = 0
        super().add(seq, now)

    def remove(self, seq: Sequence) -> None:
        """Forget `seq`."""
        self._slot.pop(seq.rid, None)
        self._used.pop(seq.rid, None)
        super().remove(seq)

    def level(self, seq: Sequence) -> int:
        """The current level of `seq` (0 is the top)."""
        return self._slot[seq.rid] >> LEVEL_SHIFT

    def key(self, seq: Sequence, now: float) -> int:
        """level << LEVEL_SHIFT | ticket: higher levels first, round robin within a level.

        One integer orders as the pair (level, ticket) does and compares
        faster in the heap.
        """
        return self._slot[seq.rid]

    def candidates(self, now: float) -> Iterator[Sequence]:
        """Boost everyone to level 0 when the boost period has passed, then pop best first."""
        if now - self._last_boost >= self.boost:
            self._last_boost = now
            self._slot = {rid: slot & TICKET_MASK for rid, slot in self._slot.items()}
            self._used = dict.fromkeys(self._used, 0)
            self.rekey_all(now)
        return super().candidates(now)

    def charge(self, seq: Sequence, prefill: int, emitted: int, now: float) -> None:
        """Count the tokens served against the allotment; a spent allotment moves `seq` down a level."""
        rid = seq.rid
        level = self._slot[rid] >> LEVEL_SHIFT
        used = self._used[rid] + prefill + emitted
        if used >= self.quantum << level:
            used = 0
            self._slot[rid] = min(level + 1, self.levels - 1) << LEVEL_SHIFT | next(self._tickets)
        self._used[rid] = used
