"""Paged attention shared by every architecture: the KV block storage and the index plan of one step.

A model's `step(kv, tokens, positions, block_tables)` runs one iteration of
continuous batching: each sequence feeds some new tokens (a prefill chunk or
one decode token) from its own position, their keys and values go into the
`PagedKV` blocks its block table names, and attention reads the sequence's
whole context back through the same table. Everything in that which does not
depend on the architecture lives here:

- `PagedKV`, the storage: one tensor per model holding, per layer, blocks of
  `block_size` positions of keys and values of the `n_kv_heads` key/value
  heads (grouped-query models store only those; attention expands them).
- `StepPlan`, the bookkeeping of one step, built once in Python and moved to
  the device as a few index tensors: the packed token ids and positions of
  the fed tokens, the slots their keys and values go to, the blocks each
  sequence reads, the attention mask, and the rows mapping the packed tokens
  to a padded [sequences, tokens] grid and back. Per layer a model computes
  its own queries, keys and values (projections, rotary embeddings, ...) and
  hands them to `StepPlan.attend`, which does one `index_copy_` (the new keys
  and values) and one `index_select` (the contexts, whole blocks at a time; a
  lone sequence whose blocks have consecutive ids reads a slice instead, no
  copy) and the attention itself; a decode step whose sequences all end at
  the same position needs no mask.
- `causal_attention`, the plain (unpaged) causal attention of a model's
  `forward`, with the same head layout, so both run paths agree.
- `PagedLM`, the base of every architecture's model: its `forward`,
  `log_probs`, `new_kv` and `step` drive the model's own pieces (`embed`,
  each block's `q_kv` and `finish`, `logits`), so a model defines only its
  math and both run paths share it; a step-by-step paged run gives the
  logits of the plain forward on the whole sequence (up to float rounding).

Block `i` of a block table holds positions `[i * block_size, (i + 1) * block_size)`;
the tables are those of the memory service (`llmos.services.memory.kv`).
"""

from collections.abc import Sequence
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn


class PagedKV:
    """The paged KV cache storage of one model on one device.

    One tensor `data` of shape [n_layers, num_blocks, block_size, 2, n_kv_heads, head_dim]:
    block `b` of layer `l` is `data[l, b]`, the keys (index 0 of the `2` axis)
    and values (index 1) of `block_size` consecutive positions of one sequence.
    Within a layer the blocks lie end to end, so `slots()` can see a layer as
    one flat array of `num_blocks * block_size` position slots (position
    offset `o` of block `b` is slot `b * block_size + o`): a step writes new
    keys and values into slots with one `index_copy_` per layer and reads
    contexts back whole blocks at a time with one `index_select` (or, for
    consecutive block ids, as one slice). A position's key and value sit side
    by side (the `2` axis comes after the slot), so one copy moves both.
    Copy-on-write copies a block in every layer (`copy_blocks`). Block ids are
    those the memory service hands out; this object does no bookkeeping of its
    own.
    """

    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        num_blocks: int,
        block_size: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("a PagedKV needs at least one block of at least one position")
        if min(n_layers, n_kv_heads, head_dim) < 1:
            raise ValueError("a PagedKV needs at least one layer, one head and one channel")
        self.block_size = block_size
        shape = (n_layers, num_blocks, block_size, 2, n_kv_heads, head_dim)
        # zeros, not empty: padding reads of a batched step must never meet NaN
        self.data = torch.zeros(shape, dtype=dtype, device=device)
        self.host: torch.Tensor | None = None  # the swap pool, in host memory (`add_host`)

    def add_host(self, num_blocks: int) -> None:
        """Set aside `num_blocks` blocks of host memory (pinned next to a GPU) that `swap` moves blocks to and from."""
        shape = (self.data.shape[0], num_blocks, *self.data.shape[2:])
        pin = self.data.device.type == "cuda"
        self.host = torch.zeros(shape, dtype=self.data.dtype, device="cpu", pin_memory=pin)

    @property
    def num_blocks(self) -> int:
        """How many blocks the storage holds."""
        return self.data.shape[1]

    def slots(self) -> torch.Tensor:
        """`data` seen as [n_layers, num_blocks * block_size, 2, n_kv_heads, head_dim] position slots (a view)."""
        return self.data.flatten(1, 2)

    def block(self, index: int) -> torch.Tensor:
        """The contents of block `index` in every layer, [n_layers, block_size, 2, n_kv_heads, head_dim] (a view)."""
        return self.data[:, index]

    def swap(self, out: bool, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy whole blocks in every layer: device -> host swap pool when `out`, else host -> device.

        `pairs` are (source, destination) block ids; IndexError names an id
        outside its pool (or a missing swap pool), before anything is copied.
        """
        if not pairs:
            return
        src_pool, dst_pool = (self.data, self.host) if out else (self.host, self.data)
        if self.host is None:
            raise IndexError("this KV storage has no swap pool")
        src, dst = (list(ids) for ids in zip(*pairs))
        for ids, pool, name in ((src, src_pool, "source"), (dst, dst_pool, "destination")):
            if not all(0 <= i < pool.shape[1] for i in ids):
                raise IndexError(f"{name} block out of range 0..{pool.shape[1] - 1} in {list(pairs)}")
        dst_pool[:, dst] = src_pool[:, src].to(dst_pool.device)

    def copy_blocks(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy whole blocks, (source, destination) pairs, e.g. the copy-on-write pairs of the memory service."""
        if pairs:
            src, dst = torch.tensor(list(pairs), device=self.data.device).unbind(1)
            self.data[:, dst] = self.data[:, src]


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask=None, causal: bool = False, dropout_p: float = 0.0
) -> torch.Tensor:
    """Scaled dot-product attention of q [B, Hq, Tq, hd] over k, v [B, Hkv, Tk, hd]; [B, Hq, Tq, hd].

    With fewer key/value heads than query heads (grouped-query attention) each
    key/value head serves `Hq // Hkv` consecutive query heads. torch's kernel
    expands them itself (`enable_gqa`): on CPU that measured 2 to 20 times
    faster than repeating the keys and values first (torch 2.13, decode and
    prefill shapes of 4 to 32 heads), and it copies nothing.
    """
    gqa = k.shape[1] != q.shape[1]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p, enable_gqa=gqa
    )


def causal_attention(q: torch.Tensor, kv: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """Plain causal self-attention: queries q [B, T, Hq, hd], keys and values kv [B, T, 2, Hkv, hd]; [B, T, Hq * hd].

    The layouts are those a model hands `StepPlan.attend`, so a model's
    `forward` and its paged `step` share their per-layer code.
    """
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, Hkv, T, hd] each
    att = attention(q.transpose(1, 2), k, v, causal=True, dropout_p=dropout_p)  # [B, Hq, T, hd]
    return att.transpose(1, 2).flatten(2)


def check_step(
    tokens: Sequence[Sequence[int]],
    positions: Sequence[int],
    block_tables: Sequence[Sequence[int]],
    block_size: int,
    max_len: int,
) -> list[int]:
    """Each sequence's context length after a step of these arguments; ValueError unless they describe a valid
    step (see `StepPlan`)."""
    if not (len(tokens) == len(positions) == len(block_tables)) or not tokens:
        raise ValueError("step needs one token list, position and block table per sequence, and at least one")
    if min(len(t) for t in tokens) < 1 or min(positions) < 0:
        raise ValueError("every sequence must feed at least one token at a position >= 0")
    ends = [p + len(t) for p, t in zip(positions, tokens)]
    if max(ends) > max_len:
        raise ValueError(f"a position exceeds max_len {max_len}")
    for table, end in zip(block_tables, ends):
        if len(table) * block_size < end:
            raise ValueError(f"a block table of {len(table)} blocks cannot hold {end} positions")
    return ends


class StepPlan:
    """The index bookkeeping of one paged step, shared by all the model's layers.

    Built from the step's arguments (see a model's `step`): sequence `s` feeds
    `tokens[s]` at positions `positions[s]`, `positions[s] + 1`, ..., and
    `block_tables[s]` names a block for every position up to its last fed one.
    The fed tokens are packed: row `n` of the model's [N, d] activations is
    one fed token, sequence by sequence (`tokens` and `positions` hold the
    ids and positions of the rows, on the cache's device). Per layer the model
    calls `attend` with the rows' queries and new keys and values; at the end
    `last` picks each sequence's last row, whose logits the step returns.

    Raises ValueError for arguments that do not describe a valid step.
    """

    def __init__(
        self,
        kv: PagedKV,
        tokens: Sequence[Sequence[int]],
        positions: Sequence[int],
        block_tables: Sequence[Sequence[int]],
        max_len: int,
    ):
        S = len(tokens)
        bs = kv.block_size
        lens = [len(t) for t in tokens]
        ends = check_step(tokens, positions, block_tables, bs, max_len)
        self.kv = kv
        self.S, self.Tq, self.Tk = S, max(lens), max(ends)
        Tq, Tk = self.Tq, self.Tk
        self.nb = nb = -(-Tk // bs)  # blocks the longest context spans
        # queries form a padded [S, Tq] grid: row i of sequence s is its token at position positions[s] + i;
        # when every sequence feeds Tq tokens the packed rows already are that grid
        self.uniform = uniform = min(lens) == Tq
        self.causal = uniform and max(positions) == 0  # whole prompts of one length: plain causal attention
        masked = not self.causal and (Tq > 1 or min(ends) < Tk)  # one decode token each, all ending together: no mask
        # a lone sequence whose first nb blocks have consecutive ids reads its context as one slice of the slots
        self.first = first = block_tables[0][0]
        self.run = S == 1 and list(block_tables[0][:nb]) == list(range(first, first + nb))

        # index lists are built in Python (a step holds few tokens), then moved to the device, one tensor per kind
        dev = kv.data.device
        new_pos = [p + i for p, n in zip(positions, lens) for i in range(n)]
        write_slots = [t[q // bs] * bs + q % bs for t, p, e in zip(block_tables, positions, ends) for q in range(p, e)]
        self.tokens, self.positions, self.write = torch.tensor(
            [[t for seq in tokens for t in seq], new_pos, write_slots], device=dev
        )
        if not self.run:  # each sequence reads its first nb blocks; a short table is padded with its first (masked)
            read = [list(t[:nb]) + [t[0]] * (nb - len(t[:nb])) for t in block_tables]
            self.read = torch.tensor(read, device=dev).view(-1)
        if Tq > 1:
            offsets = [0, *accumulate(lens)][:-1]  # packed row of each sequence's first new token
            self.last_rows = torch.tensor([o + n - 1 for o, n in zip(offsets, lens)], device=dev)  # and of its last one
        if not uniform:  # (so Tq > 1) packed rows -> [S, Tq] grid rows (a short sequence repeats its last one) and back
            self.grid = torch.tensor([o + min(i, n - 1) for o, n in zip(offsets, lens) for i in range(Tq)], device=dev)
            self.fed = torch.tensor([s * Tq + i for s, n in enumerate(lens) for i in range(n)], device=dev)
        self.mask = None
        if masked:  # the query at position positions[s] + i sees its sequence's keys at positions <= positions[s] + i
            last_seen = torch.tensor([p + i for p in positions for i in range(Tq)], device=dev)
            self.mask = (torch.arange(Tk, device=dev) <= last_seen[:, None]).view(S, 1, Tq, Tk)

    def attend(self, layer: int, q: torch.Tensor, new_kv: torch.Tensor) -> torch.Tensor:
        """Store layer `layer`'s new keys and values, then attend; [N, Hq * hd] in packed rows.

        `q` [N, Hq, hd] are the queries of the packed rows and `new_kv`
        [N, 2, Hkv, hd] their keys and values (index 0 and 1 of the `2` axis),
        exactly as they should be cached (rotary embeddings already applied).
        The cache may hold another dtype than the model computes in; both
        directions are cast.
        """
        kv, S, Tq, Tk, bs = self.kv, self.S, self.Tq, self.Tk, self.kv.block_size
        slots = kv.data[layer].flatten(0, 1)  # [num_slots, 2, Hkv, hd]
        cast = q.dtype != kv.data.dtype
        slots.index_copy_(0, self.write, new_kv.to(slots.dtype) if cast else new_kv)
        if self.run:
            ctx = slots[None, self.first * bs : self.first * bs + Tk]  # [1, Tk, 2, Hkv, hd], no copy
        else:
            ctx = kv.data[layer].index_select(0, self.read)  # [S * nb, block_size, 2, Hkv, hd]
            ctx = ctx.view(S, self.nb * bs, *ctx.shape[2:])[:, :Tk]  # [S, Tk, 2, Hkv, hd]
        k, v = (ctx.to(q.dtype) if cast else ctx).permute(2, 0, 3, 1, 4).unbind(0)  # [S, Hkv, Tk, hd] each
        q = (q if self.uniform else q[self.grid]).view(S, Tq, *q.shape[1:]).transpose(1, 2)  # [S, Hq, Tq, hd]
        att = attention(q, k, v, mask=self.mask, causal=self.causal)  # [S, Hq, Tq, hd]
        att = att.transpose(1, 2).reshape(S * Tq, -1)
        return att if self.uniform else att[self.fed]  # back to packed rows

    def last(self, x: torch.Tensor) -> torch.Tensor:
        """The rows of `x` [N, ...] (packed rows) of each sequence's last fed token, [S, ...]."""
        return x if self.Tq == 1 else x[self.last_rows]


class PagedLM(nn.Module):
    """Base of a decoder-only model with a plain forward and a paged step over the same per-layer code.

    A subclass provides:
    - `config` with `n_layers`, `n_kv_heads`, `head_dim`, `max_len` (and
      optionally `dropout`, the attention dropout while training);
    - `tok_emb`, the token embedding (its weight gives the model's device and dtype);
    - `embed(tokens, positions) -> (x, ctx)`: the input activations [..., d]
      of token ids at positions (same shapes), and whatever else its layers
      need of the positions (e.g. rotary angles), passed to every block;
    - `blocks`, the layers, each with `q_kv(x, ctx) -> (q [..., Hq, hd],
      kv [..., 2, Hkv, hd])` (keys as they are cached) and
      `finish(x, attended [..., Hq * hd]) -> x`, the layer's output;
    - `logits(h)`: vocabulary logits of final hidden states.
    """

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] of every position of `tokens` [B, T], plain causal attention."""
        T = tokens.shape[1]
        if T > self.config.max_len:
            raise ValueError(f"{T} tokens exceed max_len {self.config.max_len}")
        x, ctx = self.embed(tokens, torch.arange(T, device=tokens.device))
        p = getattr(self.config, "dropout", 0.0) if self.training else 0.0
        for block in self.blocks:
            q, kv = block.q_kv(x, ctx)
            x = block.finish(x, causal_attention(q, kv, p))
        return self.logits(x)

    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Log-probability [B, T-1] of each token of `tokens` [B, T] given the ones before it."""
        logp = F.log_softmax(self.forward(tokens[:, :-1]).float(), dim=-1)
        return logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)

    def new_kv(self, num_blocks: int, block_size: int, *, dtype: torch.dtype | None = None) -> PagedKV:
        """A `PagedKV` for this model, on the model's device and (by default) in its dtype."""
        w, c = self.tok_emb.weight, self.config
        dtype = dtype or w.dtype
        return PagedKV(c.n_layers, c.n_kv_heads, c.head_dim, num_blocks, block_size, dtype=dtype, device=w.device)

    @torch.inference_mode()
    def step(
        self,
        kv: PagedKV,
        tokens: Sequence[Sequence[int]],
        positions: Sequence[int],
        block_tables: Sequence[Sequence[int]],
    ) -> torch.Tensor:
        """One continuous-batching iteration over a batch of sequences; logits [S, vocab] of each last fed token.

        Sequence `s` feeds `tokens[s]` (one or more ids) at positions
        `positions[s]`, `positions[s] + 1`, ...; every earlier position of the
        sequence must already be in the cache. `block_tables[s]` must name a
        block for every position up to the last fed one. The new keys and
        values are written into those blocks before attention reads them, so
        after the call the cache holds the sequence up to its last fed token.
        """
        return self.run_plan(StepPlan(kv, tokens, positions, block_tables, self.config.max_len))

    def run_plan(self, plan) -> torch.Tensor:
        """The layers over a step's plan: a `StepPlan`, or the fixed-shape `DecodePlan` a CUDA graph replays
        (decode_plan.py); both give `tokens`, `positions`, `attend` and `last`. Logits [S, vocab]."""
        x, ctx = self.embed(plan.tokens, plan.positions)  # [N, d], the fed tokens packed
        for layer, block in enumerate(self.blocks):
            q, new_kv = block.q_kv(x, ctx)  # [N, Hq, hd], [N, 2, Hkv, hd]
            x = block.finish(x, plan.attend(layer, q, new_kv))
        return self.logits(plan.last(x))
