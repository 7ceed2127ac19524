"""tinygpt: a small decoder-only transformer with a plain forward and a paged-KV generation step.

The model is GPT-2 shaped: token and position embeddings, `n_layers` pre-norm
blocks (layer norm, causal multi-head self-attention, residual, layer norm,
GELU MLP, residual), a final layer norm and an LM head, tied to the token
embedding unless the config says otherwise.

Two ways to run it:
- `TinyGPT.forward(tokens)`: logits of every position of a [B, T] batch with
  plain causal attention. Training, evaluation and log-probs use it.
- `TinyGPT.step(kv, tokens, positions, block_tables)`: one iteration of
  continuous batching. Each sequence feeds some new tokens (a prefill chunk
  or one decode token) starting at its own position; their keys and values
  are written into the `PagedKV` blocks its block table names, attention reads
  all its earlier positions back through the same table, and the logits of
  each sequence's last fed token come back. The block tables are those of the
  memory service (`llmos.services.memory.kv`): block `i` of a table holds
  positions `[i * block_size, (i + 1) * block_size)`.

The step's cost beyond the plain model is its bookkeeping, so it keeps that
small: the index lists are built once per step in Python and moved to the
device as a few tensors; each layer then does one `index_copy_` (the new keys
and values) and one `index_select` (the contexts, whole blocks at a time; a
lone sequence whose blocks have consecutive ids reads a slice instead, no
copy), and a decode step whose sequences all end at the same position needs
no attention mask.

Both paths share the same weights and the same per-block code, so a step-by-step
paged run gives the logits of the plain forward on the whole sequence (up to
float rounding); tests/models checks that.
"""

import math
from collections.abc import Sequence
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from .tinygpt_config import TinyGPTConfig


class PagedKV:
    """The paged KV cache storage of one model on one device.

    One tensor `data` of shape [n_layers, num_blocks, block_size, 2, n_heads, head_dim]:
    block `b` of layer `l` is `data[l, b]`, the keys (index 0 of the `2` axis)
    and values (index 1) of `block_size` consecutive positions of one sequence.
    Within a layer the blocks lie end to end, so `slots()` can see a layer as
    one flat array of `num_blocks * block_size` position slots (position
    offset `o` of block `b` is slot `b * block_size + o`): `TinyGPT.step`
    writes new keys and values into slots with one `index_copy_` per layer and
    reads contexts back whole blocks at a time with one `index_select` (or, for
    consecutive block ids, as one slice). A position's key and value sit side
    by side (the `2` axis comes after the slot), so one copy moves both.
    Copy-on-write copies a block in every layer (`copy_blocks`). Block ids are
    those the memory service hands out; this object does no bookkeeping of its
    own.
    """

    def __init__(
        self,
        config: TinyGPTConfig,
        num_blocks: int,
        block_size: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if num_blocks < 1 or block_size < 1:
            raise ValueError("a PagedKV needs at least one block of at least one position")
        self.block_size = block_size
        shape = (config.n_layers, num_blocks, block_size, 2, config.n_heads, config.head_dim)
        # zeros, not empty: padding reads of a batched step must never meet NaN
        self.data = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def num_blocks(self) -> int:
        """How many blocks the storage holds."""
        return self.data.shape[1]

    def slots(self) -> torch.Tensor:
        """`data` seen as [n_layers, num_blocks * block_size, 2, n_heads, head_dim] position slots (a view)."""
        return self.data.flatten(1, 2)

    def block(self, index: int) -> torch.Tensor:
        """The contents of block `index` in every layer, [n_layers, block_size, 2, n_heads, head_dim] (a view)."""
        return self.data[:, index]

    def copy_blocks(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy whole blocks, (source, destination) pairs, e.g. the copy-on-write pairs of the memory service."""
        if pairs:
            src, dst = torch.tensor(list(pairs), device=self.data.device).unbind(1)
            self.data[:, dst] = self.data[:, src]


class Block(nn.Module):
    """One transformer block, split in two halves around attention so both run paths share it."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, config.mlp_ratio * d)
        self.fc_out = nn.Linear(config.mlp_ratio * d, d)
        self.drop = nn.Dropout(config.dropout)

    def q_kv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries [..., n_heads, head_dim] and keys-and-values [..., 2, n_heads, head_dim] of `x` [..., d].

        Both are views of the one qkv projection; keys and values side by side
        are what a `PagedKV` slot holds, so the paged step stores them in one copy.
        """
        d = x.shape[-1]
        qkv = self.qkv(self.ln1(x))
        return qkv[..., :d].unflatten(-1, (self.n_heads, -1)), qkv[..., d:].unflatten(-1, (2, self.n_heads, -1))

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of `x` [..., d], each [..., n_heads, head_dim]."""
        q, kv = self.q_kv_heads(x)
        return (q, *kv.unbind(-3))

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The block's output given its input `x` and the attention result `attended` (heads merged)."""
        x = x + self.drop(self.proj(attended))
        return x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Plain causal self-attention block over `x` [B, T, d]."""
        q, k, v = (t.transpose(1, 2) for t in self.qkv_heads(x))  # [B, H, T, hd]
        p = self.drop.p if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        return self.finish(x, att.transpose(1, 2).reshape(x.shape))


class TinyGPT(nn.Module):
    """The tinygpt decoder-only transformer."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        # tied: the head is the token embedding itself (no second parameter, so checkpoints hold no alias)
        self.head = None if config.tie_weights else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2's scaled init of the residual projections
            for lin in (block.proj, block.fc_out):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """GPT-2 style initial weights."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of hidden states `h` [..., d] (final layer norm, then the head)."""
        h = self.ln_f(h)
        return self.head(h) if self.head is not None else h @ self.tok_emb.weight.t()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] of every position of `tokens` [B, T], plain causal attention."""
        T = tokens.shape[1]
        if T > self.config.max_len:
            raise ValueError(f"{T} tokens exceed max_len {self.config.max_len}")
        pos = torch.arange(T, device=tokens.device)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.logits(x)

    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Log-probability [B, T-1] of each token of `tokens` [B, T] given the ones before it."""
        logp = F.log_softmax(self.forward(tokens[:, :-1]).float(), dim=-1)
        return logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)

    def new_kv(self, num_blocks: int, block_size: int, *, dtype: torch.dtype | None = None) -> PagedKV:
        """A `PagedKV` for this model, on the model's device and (by default) in its dtype."""
        w = self.tok_emb.weight
        return PagedKV(self.config, num_blocks, block_size, dtype=dtype or w.dtype, device=w.device)

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
        S = len(tokens)
        if not (S == len(positions) == len(block_tables)) or S == 0:
            raise ValueError("step needs one token list, position and block table per sequence, and at least one")
        bs = kv.block_size
        lens = [len(t) for t in tokens]
        ends = [p + n for p, n in zip(positions, lens)]  # context length of each sequence after this step
        if min(lens) < 1 or min(positions) < 0:
            raise ValueError("every sequence must feed at least one token at a position >= 0")
        if max(ends) > self.config.max_len:
            raise ValueError(f"a position exceeds max_len {self.config.max_len}")
        for table, end in zip(block_tables, ends):
            if len(table) * bs < end:
                raise ValueError(f"a block table of {len(table)} blocks cannot hold {end} positions")
        Tq, Tk = max(lens), max(ends)
        nb = -(-Tk // bs)  # blocks the longest context spans
        # queries form a padded [S, Tq] grid: row i of sequence s is its token at position positions[s] + i;
        # when every sequence feeds Tq tokens the packed rows already are that grid
        uniform = min(lens) == Tq
        causal = uniform and max(positions) == 0  # whole prompts of one length: plain causal attention
        masked = not causal and (Tq > 1 or min(ends) < Tk)  # one decode token each, all ending together: no mask
        # a lone sequence whose first nb blocks have consecutive ids reads its context as one slice of the slots
        first = block_tables[0][0]
        run = S == 1 and list(block_tables[0][:nb]) == list(range(first, first + nb))

        # index lists are built in Python (a step holds few tokens), then moved to the device, one tensor per kind
        dev = kv.data.device
        new_pos = [p + i for p, n in zip(positions, lens) for i in range(n)]
        write_slots = [t[q // bs] * bs + q % bs for t, p, e in zip(block_tables, positions, ends) for q in range(p, e)]
        flat, pos_t, write_t = torch.tensor([[t for seq in tokens for t in seq], new_pos, write_slots], device=dev)
        if not run:  # each sequence reads its first nb blocks; a short table is padded with its first block (masked)
            read = [list(t[:nb]) + [t[0]] * (nb - len(t[:nb])) for t in block_tables]
            read_t = torch.tensor(read, device=dev).view(-1)
        if Tq > 1:
            offsets = [0, *accumulate(lens)][:-1]  # packed row of each sequence's first new token
            last_t = torch.tensor([o + n - 1 for o, n in zip(offsets, lens)], device=dev)  # and of its last one
        if not uniform:  # (so Tq > 1) packed rows -> [S, Tq] grid rows (a short sequence repeats its last one) and back
            grid_t = torch.tensor([o + min(i, n - 1) for o, n in zip(offsets, lens) for i in range(Tq)], device=dev)
            fed_t = torch.tensor([s * Tq + i for s, n in enumerate(lens) for i in range(n)], device=dev)
        mask = None
        if masked:  # the query at position positions[s] + i sees its sequence's keys at positions <= positions[s] + i
            last_seen = torch.tensor([p + i for p in positions for i in range(Tq)], device=dev)
            mask = (torch.arange(Tk, device=dev) <= last_seen[:, None]).view(S, 1, Tq, Tk)

        x = self.tok_emb(flat) + self.pos_emb(pos_t)  # [N, d]
        cast = x.dtype != kv.data.dtype  # the cache may store another dtype than the model computes in
        # per layer, two views of its storage: blocks [num_blocks, block_size, 2, H, hd], slots [num_slots, 2, H, hd]
        for block, blocks, slots in zip(self.blocks, kv.data.unbind(0), kv.slots().unbind(0)):
            q, new_kv = block.q_kv_heads(x)  # [N, H, hd], [N, 2, H, hd]
            slots.index_copy_(0, write_t, new_kv.to(slots.dtype) if cast else new_kv)
            if run:
                ctx = slots[None, first * bs : first * bs + Tk]  # [1, Tk, 2, H, hd], no copy
            else:
                ctx = blocks.index_select(0, read_t)  # [S * nb, block_size, 2, H, hd]
                ctx = ctx.view(S, nb * bs, *ctx.shape[2:])[:, :Tk]  # [S, Tk, 2, H, hd]
            k, v = (ctx.to(x.dtype) if cast else ctx).permute(2, 0, 3, 1, 4).unbind(0)  # [S, H, Tk, hd] each
            q = (q if uniform else q[grid_t]).view(S, Tq, *q.shape[1:]).transpose(1, 2)  # [S, H, Tq, hd]
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # [S, H, Tq, hd]
            att = att.transpose(1, 2).reshape(S * Tq, -1)
            x = block.finish(x, att if uniform else att[fed_t])  # back to packed rows [N, d]
        return self.logits(x if Tq == 1 else x[last_t])
