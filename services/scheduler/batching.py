"""Continuous, iteration-level batching: the scheduler of one device.

Every tick (one model step of the device) the scheduler decides which
sequences advance and by how many tokens, under two budgets: at most
`Budget.tokens` tokens fed and at most `Budget.seqs` sequences. The policy
orders the runnable sequences; the scheduler walks that order and

1. takes the first `Budget.seqs` sequences it can place; a decode (one token)
   gets its token right away, a prefill or training step is set aside (it
   takes a slot only if it has KV room for at least one token);
2. shares the tokens left among the set-aside sequences in policy order,
   chunking the last one that does not fit (chunked prefill). Decodes
   therefore go before new prefills, and a long prompt never blocks the
   device for more than one tick's budget;
3. if a set-aside prefill found no KV room after all, or a preemption freed
   room for sequences skipped earlier, walks on (or retries those) while the
   budgets allow, so no tick leaves budget idle that runnable work could use.

KV memory is counted through a `BlockSpace`. When a sequence needs blocks that
are not free, the scheduler preempts the worst-ranked sequence holding blocks
outside the batch, provided it ranks below the one that needs room. One
exception keeps memory from livelock and deadlock: the *anchor*, the sequence
that has held its blocks longest, is never a victim and may preempt any holder
outside the batch. A victim is not rescheduled in the same tick. It is preempted by swap
(its blocks move to host memory, progress kept) or by recompute (its blocks
are freed; it re-feeds prompt and output later and continues with the same
output). Training steps hold no KV and compete for the token budget like
prefills, so training and inference share one device.

A tick is two calls: `tick(now)` plans a `Batch` (and takes the KV blocks it
needs); the caller runs the step on the device and then calls
`complete(batch, now)`, which records progress and returns the sequences that
finished. The clock is whatever the caller passes: real time in the kernel,
virtual time in the simulator.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmos.services.scheduler.blocks import BlockSpace, blocks_for
from llmos.services.scheduler.policies.base import Policy
from llmos.services.scheduler.request import Kind, Request, Sequence, State


@dataclass(frozen=True, slots=True)
class Budget:
    """Per-tick limits: `tokens` fed in total, `seqs` sequences in the batch."""

    tokens: int = 512
    seqs: int = 64

    def __post_init__(self) -> None:
        """Both budgets must allow at least one unit of work."""
        if self.tokens < 1 or self.seqs < 1:
            raise ValueError("token and sequence budgets must be >= 1")


class Preemption(enum.Enum):
    """How a victim gives its KV blocks back."""

    RECOMPUTE = "recompute"
    SWAP = "swap"


@dataclass(slots=True)
class Entry:
    """One sequence in a batch: feed `fed` tokens starting at position `start`."""

    seq: Sequence
    fed: int
    start: int
    emits: bool
    decode: bool

    @property
    def prefill(self) -> int:
        """Tokens of this entry that count as prefill (0 for a decode)."""
        return 0 if self.decode else self.fed


@dataclass(slots=True)
class Preempted:
    """A preemption: `victim` gave up its blocks so that `beneficiary` could run.

    The policy's ranks of both at that moment are kept: the victim's is the
    larger, unless `by_anchor` (the beneficiary was the anchor, the longest
    holder of blocks, which may preempt whatever its rank).
    """

    victim: Sequence
    beneficiary: Sequence
    mode: Preemption
    victim_rank: Any
    beneficiary_rank: Any
    by_anchor: bool


@dataclass(slots=True)
class Batch:
    """The plan of one tick: what to run, and what moved in KV memory before it."""

    tick: int
    now: float
    entries: list[Entry] = field(default_factory=list)
    swapped_in: list[Sequence] = field(default_factory=list)
    preempted: list[Preempted] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of sequences in the batch."""
        return len(self.entries)

    @property
    def tokens(self) -> int:
        """Tokens fed by the whole batch."""
        return sum(e.fed for e in self.entries)

    @property
    def decode_tokens(self) -> int:
        """Tokens fed by decodes (one per decoding sequence)."""
        return sum(1 for e in self.entries if e.decode)

    @property
    def prefill_tokens(self) -> int:
        """Tokens fed by inference prefill chunks (including recompute)."""
        return sum(e.fed for e in self.entries if not e.decode and not e.seq.is_training)

    @property
    def training_tokens(self) -> int:
        """Tokens fed by training steps."""
        return sum(e.fed for e in self.entries if e.seq.is_training)

    @property
    def attended(self) -> int:
        """Query-key pairs of attention in the step (each fed token attends to its prefix)."""
        return sum(e.fed * e.start + e.fed * (e.fed + 1) // 2 for e in self.entries)

    @property
    def kv_read(self) -> int:
        """Tokens of KV read by the step: the cached prefix of every inference entry."""
        return sum(e.start for e in self.entries if not e.seq.is_training)


class Scheduler:
    """The scheduler of one device: a policy over the continuous batching layer."""

    def __init__(self, policy: Policy, blocks: BlockSpace, budget: Budget | None = None,
                 preemption: Preemption | str = Preemption.RECOMPUTE, static: bool = False) -> None:
        """Create a scheduler.

        `static=True` turns continuous batching off, for comparison: a batch
        of up to `budget.seqs` sequences is formed when the previous one has
        entirely finished, and nothing joins it before then.
        """
        self.policy = policy
        self.blocks = blocks
        self.budget = budget or Budget()
        self.preemption = Preemption(preemption)
        self.static = static
        self.ticks = 0
        self._runnable: dict[int, Sequence] = {}  # rid -> sequence, submission order
        self._holders: dict[int, Sequence] = {}  # rid -> sequence holding device KV blocks
        self._cohort: list[Sequence] = []
        self._victims: set[int] = set()  # preempted in the tick being planned: not rescheduled in it
        self._open: Batch | None = None

    # ---- work in and out -------------------------------------------------

    def submit(self, request: Request, now: float) -> Sequence:
        """Queue `request`; raise ValueError if its id is in use or its KV can never fit."""
        if request.rid in self._runnable:
            raise ValueError(f"request {request.rid} is already queued")
        if request.kind is Kind.INFERENCE:
            peak = request.prompt_len + request.output_len - 1
            if blocks_for(peak, self.blocks.block_size) > self.blocks.total:
                raise ValueError(f"request {request.rid} needs more KV blocks than the device has")
        seq = Sequence(request)
        self._runnable[request.rid] = seq
        self.policy.add(seq, now)
        return seq

    def cancel(self, rid: int) -> Sequence | None:
        """Drop request `rid` (its process died or gave up) and free its blocks."""
        if self._open is not None:
            raise RuntimeError("cancel between ticks: complete() the open batch first")
        seq = self._runnable.pop(rid, None)
        if seq is not None:
            self._retire(seq)
        return seq

    def set_policy(self, policy: Policy, now: float) -> None:
        """Switch to `policy`, handing it every queued sequence in submission order."""
        if self._open is not None:
            raise RuntimeError("switch policies between ticks: complete() the open batch first")
        for seq in self._runnable.values():
            policy.add(seq, now)
        self.policy = policy

    def sequences(self) -> Iterable[Sequence]:
        """The runnable sequences, in submission order."""
        return self._runnable.values()

    def __len__(self) -> int:
        """Number of runnable (submitted, unfinished) sequences."""
        return len(self._runnable)

    # ---- one tick --------------------------------------------------------

    def tick(self, now: float) -> Batch:
        """Plan the next model step; the caller runs it and then calls `complete`."""
        if self._open is not None:
            raise RuntimeError("complete() the previous batch before the next tick")
        self.ticks += 1
        batch = Batch(self.ticks, now)
        in_batch: set[int] = set()
        tokens_left = self.budget.tokens
        max_seqs = self.budget.seqs
        place = self._place
        victims = self._victims = set()
        order = self._order(now)
        skipped: list[Sequence] = []  # found no KV room when their turn came
        exhausted = False
        seen = 0  # preemptions already followed by a retry of the skipped
        while True:
            deferred: list[Sequence] = []
            if not exhausted:
                exhausted = True
                for seq in order:
                    if seq.rid in victims:
                        continue
                    used = place(seq, in_batch, batch, deferred, now)
                    if used is None:
                        skipped.append(seq)
                        continue
                    tokens_left -= used
                    if len(in_batch) >= max_seqs or tokens_left == 0:
                        exhausted = False
                        break
            # a preemption may have freed more than it needed: retry the skipped, in order
            while skipped and len(batch.preempted) > seen and len(in_batch) < max_seqs and tokens_left:
                seen = len(batch.preempted)
                still = []
                for seq in skipped:
                    full = len(in_batch) >= max_seqs or tokens_left == 0
                    used = None if full or seq.rid in victims else place(seq, in_batch, batch, deferred, now)
                    if used is None:
                        still.append(seq)
                    else:
                        tokens_left -= used
                skipped = still
            tokens_left, dropped = self._share(deferred, in_batch, batch, tokens_left, now)
            if tokens_left == 0 or len(in_batch) >= max_seqs:
                break
            # a prefill without room frees its slot (walk on); sharing may have preempted (retry)
            if not (dropped and not exhausted) and not (skipped and len(batch.preempted) > seen):
                break
        self.policy.end_tick(now)
        self._open = batch
        return batch

    def complete(self, batch: Batch, now: float) -> list[Sequence]:
        """Record that `batch` ran, ending at time `now`; return the sequences that finished."""
        if batch is not self._open:
            raise RuntimeError("complete() takes the batch of the last tick, once")
        self._open = None
        finished = []
        for entry in batch.entries:
            seq = entry.seq
            if seq.advance(entry.fed) and seq.first_token_at is None:
                seq.first_token_at = now
            if seq.complete:
                seq.finished_at = now
                del self._runnable[seq.rid]
                self._retire(seq)
                finished.append(seq)
        return finished

    # ---- helpers ---------------------------------------------------------

    def _place(self, seq: Sequence, in_batch: set[int], batch: Batch, deferred: list[Sequence],
               now: float) -> int | None:
        """Put `seq` in the batch if it has KV room; return the tokens it took now, None if it has no room.

        A decode takes its one token at once; a prefill or training step is
        set aside in `deferred` (its tokens are shared out after the walk) and
        takes a sequence slot only if it has room for at least one token.
        """
        if seq.state is State.SWAPPED and not self._swap_in(seq, in_batch, batch):
            return None
        if seq.generated and seq.request.prompt_len + seq.generated - seq.computed == 1:
            # a decode (Sequence.is_decode, inlined in this hot path) already holds blocks: it only grows
            try:
                self.blocks.grow(seq.rid, 1)
            except MemoryError:
                if not self._make_room(seq, 1, in_batch, batch):
                    return None
                self.blocks.grow(seq.rid, 1)
            batch.entries.append(Entry(seq, 1, seq.computed, True, True))
            self.policy.charge(seq, 0, 1, now)
            in_batch.add(seq.rid)
            return 1
        if not seq.is_training and not self.blocks.can_grow(seq.rid, 1) \
                and not self._make_room(seq, 1, in_batch, batch):
            return None
        deferred.append(seq)
        in_batch.add(seq.rid)
        return 0

    def _share(self, deferred: list[Sequence], in_batch: set[int], batch: Batch, tokens_left: int,
               now: float) -> tuple[int, bool]:
        """Share the tokens left among set-aside prefills in order, chunking; return (tokens left, dropped any)."""
        dropped = False
        for seq in deferred:
            if not seq.computed and seq.state is State.WAITING and not seq.is_training:
                self._attach_prefix(seq)
            fed = min(seq.pending, tokens_left)
            if fed and not seq.is_training:
                fed = self._fit(seq, fed, in_batch, batch)
                if fed:
                    self._grow(seq, fed)
            if fed == 0:
                in_batch.discard(seq.rid)
                dropped = True
                continue
            emits = not seq.is_training and fed == seq.pending
            batch.entries.append(Entry(seq, fed, seq.computed, emits, False))
            self.policy.charge(seq, fed, int(emits), now)
            tokens_left -= fed
        return tokens_left, dropped

    def _order(self, now: float) -> Iterator[Sequence]:
        """The policy's order, or in static mode the members of the current static batch."""
        if not self.static:
            return self.policy.candidates(now)
        self._cohort = [s for s in self._cohort if not s.done]
        if not self._cohort:
            for seq in self.policy.candidates(now):
                self._cohort.append(seq)
                if len(self._cohort) == self.budget.seqs:
                    break
        return iter(self._cohort)

    def _retire(self, seq: Sequence) -> None:
        """Free the blocks of a finished or cancelled sequence and drop it from the policy."""
        seq.state = State.FINISHED
        self.blocks.release(seq.rid)
        self._holders.pop(seq.rid, None)
        self.policy.remove(seq)

    def _attach_prefix(self, seq: Sequence) -> None:
        """A sequence about to feed its context from the start takes the cached blocks of its prefix, if any:
        their tokens count as computed. At least one token is left to feed, for the logits of the next."""
        hit = self.blocks.attach_prefix(seq.rid, seq.pending - 1)
        if hit:
            seq.computed = hit
            seq.state = State.RUNNING
            self._holders[seq.rid] = seq

    def _grow(self, seq: Sequence, tokens: int) -> None:
        self.blocks.grow(seq.rid, tokens)
        if seq.state is not State.RUNNING:
            seq.state = State.RUNNING
            self._holders[seq.rid] = seq

    def _fit(self, seq: Sequence, fed: int, in_batch: set[int], batch: Batch) -> int:
        """Tokens of `seq` (at most `fed`) that fit in KV memory, preempting if needed."""
        if self.blocks.can_grow(seq.rid, fed) or self._make_room(seq, fed, in_batch, batch):
            return fed
        room = (self.blocks.held(seq.rid) + self.blocks.free()) * self.blocks.block_size - seq.computed
        return max(0, min(fed, room))

    def _swap_in(self, seq: Sequence, in_batch: set[int], batch: Batch) -> bool:
        """Bring a swapped-out sequence back to the device, preempting others if needed."""
        blocks = self.blocks
        while not blocks.can_swap_in(seq.rid):
            if not self._preempt_one(seq, in_batch, batch):
                return False
        blocks.swap_in(seq.rid)
        seq.state = State.RUNNING
        self._holders[seq.rid] = seq
        batch.swapped_in.append(seq)
        return True

    def _make_room(self, seq: Sequence, tokens: int, in_batch: set[int], batch: Batch) -> bool:
        """Preempt worse-ranked sequences until `seq` can grow by `tokens`; False if it cannot."""
        while not self.blocks.can_grow(seq.rid, tokens):
            if not self._preempt_one(seq, in_batch, batch):
                return False
        return True

    def _preempt_one(self, seq: Sequence, in_batch: set[int], batch: Batch) -> bool:
        """Preempt the worst-ranked block holder outside the batch, if it ranks below `seq`.

        The anchor, the sequence that has held its blocks longest, is never a
        victim and may preempt any holder outside the batch whatever its rank.
        So some sequence always keeps its progress and can always grow: ranks
        that keep changing (round robin, MLFQ, VTC) cannot make sequences
        preempt each other forever, nor hold each other's blocks in a deadlock.
        """
        rank = self.policy.rank
        holders = self._holders
        anchor = next(iter(holders), None)
        outside = [s for rid, s in holders.items() if rid not in in_batch and rid != seq.rid and rid != anchor]
        if not outside:
            return False
        victim = max(outside, key=rank)
        victim_rank, seq_rank = rank(victim), rank(seq)
        by_anchor = seq.rid == anchor
        if victim_rank <= seq_rank and not by_anchor:
            return False
        mode = self.preemption
        del self._holders[victim.rid]
        if mode is Preemption.SWAP and self.blocks.can_swap_out(victim.rid):
            self.blocks.swap_out(victim.rid)
            victim.state = State.SWAPPED
        else:
            mode = Preemption.RECOMPUTE
            self.blocks.release(victim.rid)
            victim.computed = 0
            victim.state = State.WAITING
        victim.preemptions += 1
        self._victims.add(victim.rid)
        batch.preempted.append(Preempted(victim, seq, mode, victim_rank, seq_rank, by_anchor))
        return True
