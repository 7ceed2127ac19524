"""Continuous batching of generate calls on one loaded model, driven by the scheduler service.

Every model has a `Batcher`. Each generate call becomes a `Generation` and a
`Request` of the scheduler service (`services/scheduler/batching.Scheduler`)
whose KV books are the model's own paged `KVCache`, seen through a
`PagedBlockSpace`. One tick of the scheduler plans one step of the model:
which sequences feed which tokens (decodes first, prompts chunked into the
token budget), and, when the model's KV blocks run out, which sequence is
preempted. Preemption is by recompute unless the model was loaded with
preempt="swap": under recompute the victim's blocks are freed, it keeps its
output, and when it runs again it re-feeds prompt and output and continues
where it stopped; under swap its blocks are copied to the model's host swap
pool and back (the copies ride on the next step sent, before it runs), so it
continues without feeding anything again. Because a sampled token depends
only on the request's seed and its position, a preempted generation produces
the same text as one that never was, either way.

The step goes to the device as one `Work` item; when it comes back, the
scheduler records the progress, each generation that emitted a token streams
its text, and the next step is planned at once, so generate calls of any
process join the very next step and leave it as soon as they end.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from llmos.services.memory.admission import Admission
from llmos.services.scheduler.batching import Batch, Budget, Scheduler
from llmos.services.scheduler.blocks import PagedBlockSpace
from llmos.services.scheduler.request import Request
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import messages as m

from .devices import Work
from .proc import KERNEL_PID

if TYPE_CHECKING:
    from llmos.drivers.models.decoding import StopStream

    from .dispatch import CallCtx
    from .kernel import Kernel
    from .sysmodel import Model

MAX_BATCH = 32
"""Sequences in one step."""
TOKEN_BUDGET = 256
"""Tokens fed in one step: decodes take one each, prompts share the rest (chunked)."""
MULTI_STEP = 32
"""Decode steps one work item may carry when nothing else is waiting (see `Batcher.lookahead`)."""

_ints_decoder = msgspec.msgpack.Decoder(list[int])


class Generation:
    """One generate call in progress: its prompt, its output so far, its text stream and counters."""

    def __init__(self, c: CallCtx, rid: int, prompt: list[int], max_tokens: int, stream: StopStream,
                 limit: str = "length"):  # fmt: skip
        """`limit`: the finish reason once `max_tokens` are out ("max_len" when the model's length cut them)."""
        self.c = c
        self.rid = rid
        self.prompt = prompt
        self.output: list[int] = []
        self.max_tokens = max_tokens
        self.limit = limit
        self.stream = stream
        self.unsent = ""  # text produced but not streamed yet
        self.shared_steps = 0  # steps that carried other sequences too
        self.preemptions = 0
        self.swaps = 0  # of which by swap
        self.cached = 0  # context tokens taken from the prefix cache
        self.cache = c.req.cache  # takes part in prefix caching (the model's own setting comes on top)
        self.started = time.monotonic()
        self.device_s = 0.0

    @property
    def pid(self) -> int:
        """The calling process."""
        return self.c.proc.pid

    @property
    def gone(self) -> bool:
        """Whether the calling process has exited (nobody waits for the text)."""
        return self.c.proc.state == "exited"

    def feed(self, start: int, count: int) -> list[int]:
        """The `count` tokens of prompt-then-output from position `start`: what a step feeds."""
        if start >= len(self.prompt):
            return self.output[start - len(self.prompt) : start - len(self.prompt) + count]
        return (self.prompt + self.output)[start : start + count]

    def emit(self, token: int) -> bool:
        """A step produced this generation's next token: add its text to what `flush` streams; True when the call is over."""
        self.c.proc.tokens += 1
        self.output.append(token)
        self.unsent += self.stream.feed(token)
        if self.stream.stopped:
            self.finish("stop")
            return True
        if len(self.output) == self.max_tokens:
            self.unsent += self.stream.finish()
            self.finish(self.limit)
            return True
        return False

    def flush(self) -> None:
        """Stream the text the last work item produced as one PARTIAL reply (one per item, not per token)."""
        if self.unsent:
            self.c.partial(m.Generated(text=self.unsent))
            self.unsent = ""

    def finish(self, why: str) -> None:
        """Send the last text and the Completion."""
        self.flush()
        self.c.reply(
            m.Completion(
                text=self.stream.text, tokens=len(self.output), finish=why, wall_s=time.monotonic() - self.started,
                device_s=self.device_s, shared_steps=self.shared_steps, preemptions=self.preemptions,
                ids=self.output, cached=self.cached, swaps=self.swaps,
            )
        )  # fmt: skip


class Batcher:
    """The continuous-batching loop of one model: a scheduler over its KV blocks, one step in flight at a time."""

    def __init__(self, k: Kernel, model: Model, policy):
        self.k = k
        self.model = model
        self.gens: dict[int, Generation] = {}
        self.space = PagedBlockSpace(model.kv, self.owner_of, self.context_of, self.on_lookup)
        self.sched = Scheduler(policy, self.space, Budget(tokens=TOKEN_BUDGET, seqs=MAX_BATCH), model.preempt)
        self.open: Batch | None = None  # the step queued or running on the device, if any
        self.next_policy = None  # a policy to switch to before the next tick
        self.kv_used = 0  # the model's KV blocks in use when last traced

    def set_policy(self, policy) -> None:
        """Order generations by `policy` from the next step on (the step in flight keeps its plan)."""
        self.next_policy = policy
        if self.open is None:
            self.pump()

    def owner_of(self, rid: int) -> int:
        """The process a sequence's KV blocks are charged to."""
        return self.gens[rid].pid

    def context_of(self, rid: int) -> list[int] | None:
        """A sequence's token ids for prefix caching (prompt, then output so far); None when it opted out."""
        gen = self.gens.get(rid)
        return gen.prompt + gen.output if gen is not None and gen.cache and self.model.cache else None

    def on_lookup(self, rid: int, tokens: int, found: int) -> None:
        """A sequence looked the first `tokens` tokens of its context up in the prefix cache and found `found`."""
        gen = self.gens[rid]
        gen.cached += found
        model = self.model
        space = self.space
        self.k.trace("kv.prefix", device=model.device, model=model.mid, pid=gen.pid, tokens=tokens, hit=found,
                     pool_tokens=space.looked_up, pool_hits=space.hit)  # fmt: skip

    def add(self, gen: Generation) -> None:
        """Queue a new generation; it joins the next step that has room for it."""
        now = time.monotonic()
        self.sched.submit(Request(gen.rid, gen.pid, now, len(gen.prompt), gen.max_tokens), now)
        self.gens[gen.rid] = gen
        self.pump()

    def drop(self, rid: int) -> None:
        """Forget a generation (ended, failed or its process gone) and free its blocks; only between steps."""
        self.gens.pop(rid, None)
        self.sched.cancel(rid)
        self.note_kv()

    def note_kv(self) -> None:
        """Trace the model's KV blocks in use when they changed (`kv.used`: the plot's KV panel)."""
        used = self.model.kv.num_used_blocks
        if used != self.kv_used:
            self.kv_used = used
            self.k.trace("kv.used", device=self.model.device, model=self.model.mid, used=used,
                         total=self.model.kv.num_blocks)  # fmt: skip

    def fail_all(self, errno: Errno, message: str) -> None:
        """The model is gone: every generation in progress fails (a step still out is written off)."""
        self.close_step()
        for rid, gen in list(self.gens.items()):
            self.drop(rid)
            if not gen.gone:
                gen.c.fail(errno, message)

    def pump(self) -> None:
        """Send the model's next step unless one is on the device or nothing is runnable."""
        model = self.model
        if model.freed or model.lost:
            return self.fail_all(Errno.EBADF if model.freed else Errno.EIO, model.lost or "the model was freed during generate")
        if self.open is not None:
            return
        if self.next_policy is not None:
            self.sched.set_policy(self.next_policy, time.monotonic())
            self.next_policy = None
        for rid in [rid for rid, gen in self.gens.items() if gen.gone]:
            self.drop(rid)
        if not self.gens:
            return
        evictions = model.kv.evictions
        batch = self.sched.tick(time.monotonic())
        self.note_kv()
        self.note_preemptions(batch)
        if not batch.entries:  # cannot happen while the scheduler keeps an anchor; never leave it open
            self.sched.complete(batch, time.monotonic())
            return
        last = self.lookahead(batch)
        if model.kv.evictions > evictions:
            self.k.trace("kv.evict", device=model.device, model=model.mid, blocks=model.kv.evictions - evictions)
        dev = self.k.devices[model.device]
        seqs = [self.seq_step(e.seq.rid, e.start, e.fed) for e in batch.entries]  # tables cover the lookahead too
        moves, moved = self.take_moves()
        msg = proto.DModelStep(
            seq=dev.next_seq(), model=model.mid, seqs=seqs, steps=1 + last.tick - batch.tick, moves=moves
        )  # fmt: skip
        pids = tuple(sorted({self.gens[e.seq.rid].pid for e in batch.entries}))
        self.open = last
        self.k.submit(
            dev,
            Work(
                owner=KERNEL_PID, msg=msg, always=True, pids=pids,
                done=lambda ok, frames: self.stepped(batch, last, _ints_decoder.decode(frames[0].buffer), ok.wall_s),
                fail=lambda errno, message: self.step_failed(batch, last, errno, message, moved),
            ),
        )  # fmt: skip

    def lookahead(self, batch: Batch) -> Batch:
        """Plan up to MULTI_STEP - 1 more decode ticks now, to run on the device with `batch`; the last tick planned.

        Only when nothing else could change the next ticks: `batch` is all
        decodes, nobody else is runnable, nobody was preempted, and the KV
        blocks for the extra tokens are free now. Then the next ticks would
        be these very decodes, so the device runs them back to back (feeding
        each sequence the token it just drew) and the kernel and the device
        talk once per MULTI_STEP tokens. A call arriving meanwhile waits for
        the work item, at most MULTI_STEP - 1 steps longer.
        """
        entries = batch.entries
        if self.next_policy is not None or batch.preempted or len(self.sched) != len(entries):
            return batch
        if not all(e.decode for e in entries):
            return batch
        extra = min(MULTI_STEP - 1, min(self.gens[e.seq.rid].max_tokens - e.seq.generated for e in entries) - 1)
        if extra < 1 or self.model.kv.can_append([(e.seq.rid, extra) for e in entries]) is not Admission.OK:
            return batch
        last = batch
        for _ in range(extra):
            self.sched.complete(last, time.monotonic())
            last = self.sched.tick(time.monotonic())
        return last

    def seq_step(self, rid: int, start: int, fed: int) -> proto.SeqStep:
        """One sequence's part of a step: its tokens from `start`, its block table, its sampling settings."""
        gen = self.gens[rid]
        req: m.Generate = gen.c.req
        return proto.SeqStep(
            tokens=gen.feed(start, fed), position=start, table=self.model.kv.block_table(rid),
            temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, seed=req.seed,
        )  # fmt: skip

    def note_preemptions(self, batch: Batch) -> None:
        """Count the tick's preemptions on their victims and trace each (victim, beneficiary, how)."""
        model = self.model
        for p in batch.preempted:
            victim = self.gens.get(p.victim.rid)
            if victim is not None:
                victim.preemptions += 1
            self.k.trace(
                "sched.preempt", device=model.device, model=model.mid, pid=p.victim.pid,
                beneficiary=p.beneficiary.pid, mode=p.mode.value, by_anchor=p.by_anchor,
            )  # fmt: skip

    def take_moves(self) -> tuple[list[proto.BlockMove], list[int]]:
        """The swaps planned since the last step was sent, traced: the moves for the driver, and whose blocks they are."""
        moves = self.space.take_moves()
        model = self.model
        for rid, out, pairs in moves:
            gen = self.gens.get(rid)
            if gen is not None and out:
                gen.swaps += 1
            self.k.trace("kv.swap_out" if out else "kv.swap_in", device=model.device, model=model.mid,
                         pid=gen.pid if gen else 0, blocks=len(pairs))  # fmt: skip
        return [proto.BlockMove(out=out, pairs=pairs) for _, out, pairs in moves], [rid for rid, _, _ in moves]

    def close_step(self) -> bool:
        """Record the step out on the device as run (the scheduler's books); False if there was none."""
        batch, self.open = self.open, None
        if batch is not None:
            self.sched.complete(batch, time.monotonic())
        return batch is not None

    def stepped(self, batch: Batch, last: Batch, tokens: list[int], wall_s: float) -> None:
        """Steps `batch` .. `last` came back: record progress, stream each emitted token, plan the next step."""
        if last is not self.open:
            return  # written off: the model went away while it ran
        for entry in last.entries:  # their KV is on the device now: its full blocks may serve other prompts
            self.space.written(entry.seq.rid, entry.start + entry.fed)
        self.close_step()
        size = len(batch.entries)
        rounds = len(tokens) // size
        for r in range(rounds):  # the first round is `batch` itself, the others its lookahead decodes
            for entry, token in zip(batch.entries, tokens[r * size : (r + 1) * size]):
                gen = self.gens.get(entry.seq.rid)
                if gen is None or gen.gone:
                    continue  # ended in an earlier round (a stop string), or its process left
                gen.device_s += wall_s / rounds * (entry.fed / batch.tokens if r == 0 else 1 / size)
                gen.shared_steps += size > 1
                if (r > 0 or entry.emits) and gen.emit(token):
                    self.drop(gen.rid)
        for entry in batch.entries:
            gen = self.gens.get(entry.seq.rid)
            if gen is not None and not gen.gone:
                gen.flush()
        self.pump()

    def step_failed(self, batch: Batch, last: Batch, errno: Errno, message: str, moved: list[int]) -> None:
        """A step failed (the device went away or refused it): its generations fail, and those whose
        KV it was to swap (their blocks hold nothing now); the others go on."""
        if last is not self.open or not self.close_step():
            return
        for rid in [entry.seq.rid for entry in batch.entries] + moved:
            gen = self.gens.get(rid)
            if gen is not None:
                self.drop(gen.rid)
                if not gen.gone:
                    gen.c.fail(errno, message)
        self.pump()
