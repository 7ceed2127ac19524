"""The scheduler simulator: a workload through a `Scheduler` in virtual time.

No sockets, no devices: requests are submitted when the virtual clock passes
their arrival, each tick's batch takes `step_time(batch)` seconds (a cost
model, injected so that services do not import drivers), and the clock jumps
over idle stretches to the next arrival. Every tick is recorded, so the run
can be printed as a trace and measured afterwards. Everything is
deterministic: the same workload and scheduler give the same records.

Given the requests' token ids (`workload.SharedPrefixes`), the run models the
kernel's prefix cache: the scheduler's `PagedBlockSpace` looks prompts up in
the KV cache before their prefill, and after each tick the simulator reports
the KV written, as `kernel/batcher.py` does after each step, so that full
blocks are named for later prompts. Hits and evictions are recorded per tick.

Swapping is not free: given `swap_time(blocks)` (the cost model's host link),
a tick that moved blocks to or from host memory lasts that much longer, the
copies being done before its step runs. Without it, swaps cost nothing.
A policy that keeps per-process counters (`counter`, as VTC does) has them
recorded after every tick, so a run can be checked tick by tick.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from llmos.services.scheduler import metrics
from llmos.services.scheduler.batching import Batch, Scheduler
from llmos.services.scheduler.request import Request
from llmos.services.scheduler.request import Sequence as Seq
from llmos.services.scheduler.workload import SharedPrefixes


def step_shape(batch: Batch) -> dict[str, int]:
    """The figures of `batch` a cost model needs, named as `llmos.drivers.costmodel.step_time` takes them.

    forward_tokens: inference tokens fed; training_tokens: training tokens
    fed; attended: query-key pairs of attention; kv_read: cached KV tokens read.
    """
    return {"forward_tokens": batch.prefill_tokens + batch.decode_tokens,
            "training_tokens": batch.training_tokens,
            "attended": batch.attended, "kv_read": batch.kv_read}


@dataclass(frozen=True, slots=True)
class Served:
    """One sequence's part of a tick: `fed` tokens from position `start`; `emitted` a token or not."""

    rid: int
    pid: int
    fed: int
    start: int
    emitted: bool
    decode: bool
    training: bool


@dataclass(frozen=True, slots=True)
class TickRecord:
    """What one tick did, from `start` to `end` (virtual seconds)."""

    tick: int
    start: float
    end: float
    served: tuple[Served, ...]
    arrived: tuple[int, ...]
    preempted: tuple[tuple[int, int, str], ...]  # (victim rid, for rid, "recompute" | "swap")
    swapped_in: tuple[int, ...]
    finished: tuple[int, ...]
    backlogged: frozenset[int]
    service: dict[int, float]
    hits: tuple[tuple[int, int], ...] = ()  # (rid, prompt tokens found in the prefix cache)
    evicted: int = 0  # cached blocks evicted to make room
    swapped_blocks: int = 0  # blocks copied to or from host memory before the step (counted with a swap_time)
    swap_s: float = 0.0  # what those copies took, included in end - start
    counters: dict[int, float] | None = None  # the policy's per-process counters after the tick (VTC)


@dataclass(frozen=True)
class SimResult:
    """A finished run: every tick, every request's sequence, and the end time.

    With the prefix cache modelled, `lookup_tokens` and `hit_tokens` are the
    space's own counts (`PagedBlockSpace.looked_up` and `hit`, as `llmos mem`
    shows them for a kernel's model); None when it was not.
    """

    ticks: list[TickRecord]
    sequences: list[Seq]
    end: float
    w_in: float
    w_out: float
    lookup_tokens: int | None = None
    hit_tokens: int = 0

    def metrics(self) -> dict:
        """Per-request latencies, throughput, service per process, fairness (see `metrics`)."""
        requests = []
        cached: dict[int, int] = {}
        for t in self.ticks:
            for rid, tokens in t.hits:
                cached[rid] = cached.get(rid, 0) + tokens
        for seq in self.sequences:
            r = seq.request
            requests.append({
                "id": r.rid, "pid": r.pid, "kind": r.kind.value, "arrival": r.arrival,
                "ttft": None if seq.first_token_at is None else seq.first_token_at - r.arrival,
                "completion": seq.finished_at - r.arrival, "finished_at": seq.finished_at,
                "preemptions": seq.preemptions,
            })
            if self.lookup_tokens is not None:
                requests[-1]["cached"] = cached.get(r.rid, 0)
        service: dict[int, float] = {seq.pid: 0.0 for seq in self.sequences}
        for t in self.ticks:
            for pid, s in t.service.items():
                service[pid] += s
        output = sum(seq.generated for seq in self.sequences)
        fed = sum(s.fed for t in self.ticks for s in t.served)
        gap = metrics.max_service_gap((t.backlogged, t.service) for t in self.ticks)
        contended = metrics.contended_service((t.backlogged, t.service) for t in self.ticks)
        pids = sorted(service)
        out = {
            "requests": requests,
            "ticks": len(self.ticks),
            "makespan_s": self.end,
            "output_tokens": output,
            "throughput_tok_s": output / self.end if self.end > 0 else 0.0,
            "fed_tok_s": fed / self.end if self.end > 0 else 0.0,
            "service": {str(pid): service[pid] for pid in pids},
            "contended_service": {str(pid): contended[pid] for pid in sorted(contended)},
            "jain": metrics.jain(list(contended.values())),
            "max_gap_tokens": gap.tokens,
            "max_gap_pids": list(gap.pids) if gap.pids else None,
            "preemptions": sum(len(t.preempted) for t in self.ticks),
            "swapped_blocks": sum(t.swapped_blocks for t in self.ticks),
            "swap_s": sum(t.swap_s for t in self.ticks),
        }
        if self.lookup_tokens is not None:
            out["prefix_hit_rate"] = self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0
            out["prefix_hit_tokens"] = self.hit_tokens
            out["prefix_lookup_tokens"] = self.lookup_tokens
            out["evictions"] = sum(t.evicted for t in self.ticks)
        return out


class Simulator:
    """Runs `requests` through `scheduler`; a tick of batch b lasts `step_time(b)` virtual seconds.

    With `prefixes` (the requests' token ids) the scheduler's block space must
    be a `PagedBlockSpace`: the simulator gives it the sequences' contexts and
    listens to its hits, which turns its prefix cache on.
    """

    def __init__(self, scheduler: Scheduler, step_time: Callable[[Batch], float],
                 requests: Sequence[Request], w_in: float = 1.0, w_out: float = 2.0,
                 prefixes: SharedPrefixes | None = None, swap_time: Callable[[int], float] | None = None) -> None:
        """Prepare a run; `w_in` and `w_out` weigh tokens fed and generated in the service counts.

        `swap_time(blocks)` is the seconds it takes to copy that many KV
        blocks across the host link; None: swaps are free.
        """
        self.scheduler = scheduler
        self.step_time = step_time
        self.requests = sorted(requests, key=lambda r: (r.arrival, r.rid))
        self.w_in = w_in
        self.w_out = w_out
        self.prefixes = prefixes
        self.swap_time = swap_time
        self._seqs: dict[int, Seq] = {}  # rid -> its sequence, once submitted
        self._hits: list[tuple[int, int]] = []  # hits of the tick being planned
        if prefixes is not None:
            if not hasattr(scheduler.blocks, "written"):
                raise TypeError("modelling the prefix cache needs a PagedBlockSpace under the scheduler")
            scheduler.blocks.context_of = self.context_of
            scheduler.blocks.on_lookup = self._on_lookup

    def context_of(self, rid: int) -> list[int] | None:
        """A submitted request's token ids so far (prompt, then output), as the kernel gives them; None: no ids."""
        if rid not in self.prefixes.prefix_of:
            return None
        return self.prefixes.context_of(rid, self._seqs[rid].generated)

    def _on_lookup(self, rid: int, tokens: int, found: int) -> None:
        """The space looked `tokens` of `rid`'s context up and found `found` cached: note a hit for this tick's record."""
        if found:
            self._hits.append((rid, found))

    def run(self, max_ticks: int | None = None) -> SimResult:
        """Simulate until every request finished (or `max_ticks` ticks ran)."""
        sched = self.scheduler
        pending = self.requests
        nxt = 0
        now = 0.0
        runnable: dict[int, int] = {}  # pid -> runnable sequences
        seqs: list[Seq] = []
        records: list[TickRecord] = []
        while max_ticks is None or len(records) < max_ticks:
            arrived = []
            while nxt < len(pending) and pending[nxt].arrival <= now:
                r = pending[nxt]
                seqs.append(sched.submit(r, now))
                self._seqs[r.rid] = seqs[-1]
                runnable[r.pid] = runnable.get(r.pid, 0) + 1
                arrived.append(r.rid)
                nxt += 1
            if not len(sched):
                if nxt == len(pending):
                    break
                now = max(now, pending[nxt].arrival)
                continue
            evictions = self._evictions()
            batch = sched.tick(now)
            moved = 0  # the swaps' block copies: no KV data here to move, but the host link's time (if modelled)
            if hasattr(sched.blocks, "take_moves"):
                moves = sched.blocks.take_moves()
                if self.swap_time is not None:
                    moved = sum(len(pairs) for _, _, pairs in moves)
            if not batch.entries:
                raise RuntimeError(f"scheduler idle at t={now} with {len(sched)} runnable sequences")
            swap = self.swap_time(moved) if moved and self.swap_time is not None else 0.0
            end = now + swap + self.step_time(batch)
            if self.prefixes is not None:  # the step ran: its KV is written, its full blocks may be named
                for e in batch.entries:
                    sched.blocks.written(e.seq.rid, e.start + e.fed)
            finished = sched.complete(batch, end)
            records.append(self._record(batch, now, end, arrived, runnable, finished, self._evictions() - evictions,
                                        moved, swap))
            for seq in finished:
                runnable[seq.pid] -= 1
            now = end
        result = SimResult(records, sorted(seqs, key=lambda s: s.rid), now, self.w_in, self.w_out)
        if self.prefixes is None:
            return result
        return replace(result, lookup_tokens=sched.blocks.looked_up, hit_tokens=sched.blocks.hit)

    def _evictions(self) -> int:
        """Cached blocks the KV cache has evicted so far (0 without a prefix cache)."""
        return self.scheduler.blocks.kv.evictions if self.prefixes is not None else 0

    def _record(self, batch: Batch, start: float, end: float, arrived: list[int],
                runnable: dict[int, int], finished: list[Seq], evicted: int, moved: int = 0,
                swap: float = 0.0) -> TickRecord:
        served, service, scheduled = [], {}, {}
        for e in batch.entries:
            seq = e.seq
            served.append(Served(seq.rid, seq.pid, e.fed, e.start, e.emits, e.decode, seq.is_training))
            service[seq.pid] = service.get(seq.pid, 0.0) + self.w_in * e.prefill + self.w_out * e.emits
            scheduled[seq.pid] = scheduled.get(seq.pid, 0) + 1
        backlogged = frozenset(pid for pid, n in runnable.items() if n > scheduled.get(pid, 0))
        hits, self._hits = tuple(self._hits), []
        counters = getattr(self.scheduler.policy, "counter", None)
        return TickRecord(batch.tick, start, end, tuple(served), tuple(arrived),
                          tuple((p.victim.rid, p.beneficiary.rid, p.mode.value) for p in batch.preempted),
                          tuple(s.rid for s in batch.swapped_in), tuple(s.rid for s in finished), backlogged, service,
                          hits, evicted, moved, swap, dict(counters) if isinstance(counters, dict) else None)

