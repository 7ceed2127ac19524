"""`DecodePlan`: a paged decode step of fixed shapes, the plan a CUDA graph captures once and replays.

`StepPlan` (paged.py) sizes its index tensors to each step: the number of
sequences, the context each reads, whether a mask is needed. A captured CUDA
graph replays the same kernels on the same buffers, so its plan has fixed
shapes instead, chosen when it is made: `batch` rows, one decode token each,
and contexts of `blocks` KV blocks. Before each replay `fill` writes the
step's values into its buffers (in place):

- a step of fewer sequences than `batch` is padded with copies of its first
  sequence (same token, position and block table); `attend` writes the keys
  and values of row 0 for every padding row (`src`), so the cache gets the
  same bytes whichever row the scatter keeps, and their logits are dropped;
- each sequence reads its first `blocks` blocks (a shorter table repeats its
  first block), and a mask computed in the step from the positions hides
  what lies past each sequence's position.

`PagedLM.run_plan` runs a model's layers over either plan; the logits of
every row come back, [batch, vocab] (the caller keeps the first rows).
"""

from collections.abc import Sequence

import torch

from .paged import PagedKV, attention


class DecodePlan:
    """The buffers of a decode step of `batch` sequences reading `blocks` KV blocks each, on the cache's device."""

    def __init__(self, kv: PagedKV, batch: int, blocks: int):
        if batch < 1 or blocks < 1:
            raise ValueError(f"a decode plan needs a batch and a context of at least 1 ({batch}, {blocks})")
        self.kv, self.batch, self.blocks = kv, batch, blocks
        self.Tk = blocks * kv.block_size
        # one buffer, so that `fill` is one copy to the device; the plan's index tensors are views of it
        self.ids = torch.zeros(batch * (4 + blocks), dtype=torch.long, device=kv.data.device)
        self.tokens, self.positions, self.write, self.src = self.ids[: 4 * batch].view(4, batch)
        self.read = self.ids[4 * batch :]  # the blocks each row reads, row by row
        # (`write`: the slot each row's key and value go to; `src`: the row whose key and value it writes)
        self.mask: torch.Tensor | None = None

    def nbytes(self) -> int:
        """The bytes its buffers hold on the device."""
        return self.ids.numel() * self.ids.element_size()

    def fill(self, tokens: Sequence[int], positions: Sequence[int], block_tables: Sequence[Sequence[int]]) -> None:
        """Write one decode step's values into the buffers: sequence `s` feeds `tokens[s]` at `positions[s]`.

        The caller has checked the step (`paged.check_step`) and that it fits
        the plan: at most `batch` sequences, none past `blocks` blocks.
        """
        n, bs, pad = len(tokens), self.kv.block_size, self.batch - len(tokens)
        tables = [list(t[: self.blocks]) + [t[0]] * (self.blocks - len(t[: self.blocks])) for t in block_tables]
        write = [t[p // bs] * bs + p % bs for t, p in zip(block_tables, positions)]
        self.ids.copy_(torch.tensor([
            *tokens, *[tokens[0]] * pad,
            *positions, *[positions[0]] * pad,
            *write, *[write[0]] * pad,
            *range(n), *[0] * pad,
            *(b for t in tables for b in t), *tables[0] * pad,
        ]))  # fmt: skip

    def attend(self, layer: int, q: torch.Tensor, new_kv: torch.Tensor) -> torch.Tensor:
        """Store layer `layer`'s new keys and values, then attend: [batch, Hq * hd] (see `StepPlan.attend`)."""
        kv, B = self.kv, self.batch
        if layer == 0:  # once per step, from the positions just filled: position t of a row is seen if t <= its own
            self.mask = (torch.arange(self.Tk, device=q.device) <= self.positions[:, None]).view(B, 1, 1, self.Tk)
        slots = kv.data[layer].flatten(0, 1)  # [num_slots, 2, Hkv, hd]
        slots.index_copy_(0, self.write, new_kv[self.src].to(slots.dtype))
        ctx = kv.data[layer].index_select(0, self.read).view(B, self.Tk, *slots.shape[1:])  # [B, Tk, 2, Hkv, hd]
        k, v = ctx.to(q.dtype).permute(2, 0, 3, 1, 4).unbind(0)  # [B, Hkv, Tk, hd] each
        att = attention(q.view(B, 1, *q.shape[1:]).transpose(1, 2), k, v, mask=self.mask)  # [B, Hq, 1, hd]
        return att.transpose(1, 2).reshape(B, -1)

    def last(self, x: torch.Tensor) -> torch.Tensor:
        """Every row is a sequence's last (only) fed token."""
        return x
