"""Captured decode steps: a model's paged decode step recorded once per shape bucket and replayed.

A decode step of a small model is dozens of small kernels, each launched
from Python; on a GPU the launches, not the memory traffic, set its time. A
CUDA graph records a step's kernels once and replays them with one launch.
A graph replays fixed shapes on fixed buffers, so steps are sorted into
buckets and each bucket is captured once, as a `DecodePlan`
(models/decode_plan.py):

- the batch pads up to the next of `BATCH_BUCKETS` (1, 2, 4, ... 128);
- the context pads up to a power of two of KV blocks, at most the blocks
  of the model's whole `max_len` (`context_bucket`).

`DecodeGraphs.step` returns None, and the caller runs the eager step, for
what is not captured: a step that feeds a sequence more than one token (a
prefill or a chunk of one), a batch past the largest bucket, and a bucket
whose graph memory the device could not give (`charge` refused it: the
ledger's ENOMEM, tried once per bucket). The memory a capture holds (its
plan's buffers and the graph's pool) is charged to the model through
`charge` before the graph is kept.

Capture and replay go through a backend: `CudaGraphs` (torch.cuda.CUDAGraph,
one memory pool shared by the model's graphs) on a GPU, and `EagerGraphs`,
which runs the step eagerly at each replay and counts captures and
replays, so the bookkeeping is tested without a GPU.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import DriverError
from .models.decode_plan import DecodePlan
from .models.paged import PagedKV, PagedLM, check_step

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
"""The batch sizes decode steps are captured at; a batch pads up to the next one."""


def batch_bucket(batch: int, buckets: Sequence[int] = BATCH_BUCKETS) -> int | None:
    """The smallest bucket that holds `batch` sequences; None past the largest."""
    return next((b for b in sorted(buckets) if b >= batch), None)


def context_bucket(blocks: int, max_blocks: int) -> int:
    """The KV blocks a step reading `blocks` blocks is captured with: the next power of two, at most `max_blocks`."""
    return min(1 << max(0, blocks - 1).bit_length(), max_blocks)


@dataclass
class Captured:
    """One captured step: `replay()` runs it again on its buffers, leaving its logits in `out`; it holds `nbytes`
    of device memory beside its plan's buffers."""

    replay: Callable[[], None]
    out: torch.Tensor
    nbytes: int


class EagerGraphs:
    """The fake backend: a capture runs the step once, a replay runs it again eagerly; both are counted."""

    def __init__(self):
        self.captures = 0
        self.replays = 0

    def capture(self, fn: Callable[[], torch.Tensor]) -> Captured:
        """Run `fn` once (as a capture's warm-up does); replays run it again into the same output tensor."""
        self.captures += 1
        out = fn()

        def replay() -> None:
            self.replays += 1
            with torch.inference_mode():  # `out` is an inference tensor (the step runs in inference mode)
                out.copy_(fn())

        return Captured(replay, out, out.numel() * out.element_size())


class CudaGraphs:
    """The CUDA backend: torch.cuda.CUDAGraph, the graphs of one model sharing one memory pool."""

    def __init__(self, device: str):
        self.device = torch.device(device)
        self.pool = torch.cuda.graph_pool_handle()

    def capture(self, fn: Callable[[], torch.Tensor]) -> Captured:
        """Warm `fn` up on a side stream (as CUDA graph capture requires), then record it; the memory the pool
        grew by is what the graph holds."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        reserved = torch.cuda.memory_reserved(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = fn()
        torch.cuda.synchronize(self.device)
        return Captured(graph.replay, out, torch.cuda.memory_reserved(self.device) - reserved)


class DecodeGraphs:
    """The captured decode steps of one model and its KV storage, by (batch bucket, context bucket).

    `charge(nbytes)` charges a new capture's memory to the model (raising
    DriverError, e.g. ENOMEM, to refuse it).
    """

    def __init__(self, model: PagedLM, kv: PagedKV, backend, charge: Callable[[int], None],
                 buckets: Sequence[int] = BATCH_BUCKETS):  # fmt: skip
        self.model, self.kv, self.backend, self.charge = model, kv, backend, charge
        self.buckets = tuple(buckets)
        self.max_blocks = -(-model.config.max_len // kv.block_size)
        self.graphs: dict[tuple[int, int], tuple[DecodePlan, Captured]] = {}
        self.refused: set[tuple[int, int]] = set()  # buckets whose memory the device would not give
        self.charged = 0  # bytes charged for the captures held

    def key(self, tokens: Sequence[Sequence[int]], positions: Sequence[int]) -> tuple[int, int] | None:
        """The (batch, context blocks) bucket of a step, or None when it runs eagerly (see the module's doc)."""
        if not tokens or len(positions) != len(tokens) or any(len(t) != 1 for t in tokens):
            return None
        batch = batch_bucket(len(tokens), self.buckets)
        if batch is None:
            return None
        key = (batch, context_bucket(-(-(max(positions) + 1) // self.kv.block_size), self.max_blocks))
        return None if key in self.refused else key

    def step(self, tokens: Sequence[Sequence[int]], positions: Sequence[int],
             block_tables: Sequence[Sequence[int]]) -> torch.Tensor | None:  # fmt: skip
        """Logits [S, vocab] of a decode step by replaying its bucket's graph (capturing it first); None when the
        step runs eagerly. ValueError for arguments that do not describe a valid step. The logits are a view of
        the graph's output, good until its next replay. (A step it leaves to the eager path is checked there, once.)"""
        key = self.key(tokens, positions)
        if key is None:
            return None
        check_step(tokens, positions, block_tables, self.kv.block_size, self.model.config.max_len)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.capture(key, tokens, positions, block_tables)
            if entry is None:
                return None
        plan, captured = entry
        plan.fill([t[0] for t in tokens], positions, block_tables)
        captured.replay()
        return captured.out[: len(tokens)]

    def capture(self, key: tuple[int, int], tokens, positions, block_tables) -> tuple[DecodePlan, Captured] | None:
        """Capture the bucket `key` on this step's values (its warm-up runs the step), and charge its memory;
        None, and the bucket is never tried again, if the charge is refused."""
        plan = DecodePlan(self.kv, *key)
        plan.fill([t[0] for t in tokens], positions, block_tables)

        @torch.inference_mode()
        def run() -> torch.Tensor:
            return self.model.run_plan(plan)

        captured = self.backend.capture(run)
        nbytes = plan.nbytes() + captured.nbytes
        try:
            self.charge(nbytes)
        except DriverError:
            self.refused.add(key)
            return None
        self.charged += nbytes
        self.graphs[key] = (plan, captured)
        return plan, captured
