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

Both paths share the same weights and the same per-block code, so a step-by-step
paged run gives the logits of the plain forward on the whole sequence (up to
float rounding); tests/models checks that.
"""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from .tokenizer import VOCAB_SIZE


@dataclass
class TinyGPTConfig:
    """The shape of a tinygpt model."""

    vocab_size: int = VOCAB_SIZE
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_len: int = 256
    dropout: float = 0.0
    tie_weights: bool = True
    mlp_ratio: int = 4

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if min(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.max_len, self.mlp_ratio) < 1:
            raise ValueError("every size in a TinyGPTConfig must be at least 1")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TinyGPTConfig":
        """A config from `to_dict`'s output; unknown keys are an error, missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TinyGPTConfig fields: {sorted(unknown)}")
        return cls(**data)


class PagedKV:
    """The paged KV cache storage of one model on one device.

    One tensor `data` of shape [num_blocks, n_layers, 2, block_size, n_heads, head_dim]:
    a block holds, for every layer, the keys (index 0) and values (index 1) of
    `block_size` consecutive positions of one sequence. Keeping all layers of a
    block together makes a block one contiguous slab, so copy-on-write and swap
    move a block with a single copy. Block ids are those the memory service
    hands out; this object does no bookkeeping of its own.
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
        shape = (num_blocks, config.n_layers, 2, block_size, config.n_heads, config.head_dim)
        # zeros, not empty: padding reads of a batched step must never meet NaN
        self.data = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def num_blocks(self) -> int:
        """How many blocks the storage holds."""
        return self.data.shape[0]

    def copy_blocks(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Copy whole blocks, (source, destination) pairs, e.g. the copy-on-write pairs of the memory service."""
        if pairs:
            src = torch.tensor([p[0] for p in pairs], device=self.data.device)
            dst = torch.tensor([p[1] for p in pairs], device=self.data.device)
            self.data[dst] = self.data[src]


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

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of `x` [..., d], each [..., n_heads, head_dim]."""
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        shape = (*x.shape[:-1], self.n_heads, -1)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

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

    @torch.no_grad()
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
        dev = kv.data.device
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

        # index lists are built in Python (a step holds few tokens), then moved to the device once each
        offsets = [0, *accumulate(lens)][:-1]  # packed row of each sequence's first new token
        new_pos = [p + i for p, n in zip(positions, lens) for i in range(n)]
        w_block = [t[q // bs] for t, p, n in zip(block_tables, positions, lens) for q in range(p, p + n)]
        # reads past a sequence's end (up to the longest context) go through its first block and are masked
        padded = [list(t[:nb]) + [t[0]] * (nb - len(t[:nb])) for t in block_tables]
        flat = torch.tensor([t for seq in tokens for t in seq], dtype=torch.long, device=dev)
        pos_t = torch.tensor(new_pos, device=dev)
        w_block_t, w_off = torch.tensor(w_block, device=dev), pos_t % bs
        k_pos = torch.arange(Tk, device=dev)
        r_block, r_off = torch.tensor(padded, device=dev)[:, k_pos // bs], k_pos % bs  # [S, Tk], [Tk]

        # queries as a padded [S, Tq] grid: row i of sequence s is its token at positions[s] + i
        uniform = min(lens) == Tq  # every sequence feeds Tq tokens: the packed rows already form the grid
        if not uniform:
            q_index = torch.tensor([o + min(i, n - 1) for o, n in zip(offsets, lens) for i in range(Tq)], device=dev)
            q_valid = torch.tensor([i < n for n in lens for i in range(Tq)], device=dev)
        if Tq == 1 and min(ends) == Tk:
            mask = None  # one query per sequence and no padded keys: every key is visible
        else:  # the query at position positions[s] + i sees the keys at positions <= positions[s] + i
            last_seen = torch.tensor(positions, device=dev)[:, None] + torch.arange(Tq, device=dev)[None, :]
            mask = (k_pos[None, None, :] <= last_seen[:, :, None])[:, None]  # [S, 1, Tq, Tk]

        x = self.tok_emb(flat) + self.pos_emb(pos_t)  # [N, d]
        for layer, block in enumerate(self.blocks):
            q, k, v = block.qkv_heads(x)  # [N, H, hd]
            cache = kv.data[:, layer]  # [num_blocks, 2, block_size, H, hd], a view
            cache[w_block_t, :, w_off] = torch.stack((k, v), dim=1).to(cache.dtype)  # [N, 2, H, hd]
            ctx = cache[r_block, :, r_off].to(q.dtype)  # [S, Tk, 2, H, hd]
            qp = q.view(S, Tq, *q.shape[1:]) if uniform else q[q_index].view(S, Tq, *q.shape[1:])
            att = F.scaled_dot_product_attention(
                qp.transpose(1, 2), ctx[:, :, 0].transpose(1, 2), ctx[:, :, 1].transpose(1, 2), attn_mask=mask
            )  # [S, H, Tq, hd]
            att = att.transpose(1, 2).reshape(S * Tq, -1)
            x = block.finish(x, att if uniform else att[q_valid])  # back to packed rows [N, d]
        last = torch.tensor([o + n - 1 for o, n in zip(offsets, lens)], device=dev)  # each last fed token
        return self.logits(x[last])
