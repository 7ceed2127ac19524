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

The step's bookkeeping (which slots the new keys and values go to, which
blocks each sequence reads, masks) is shared by every architecture and lives
in paged.py (`StepPlan`); the step here only does tinygpt's own per-layer
math around it.

Both paths share the same weights and the same per-block code, so a step-by-step
paged run gives the logits of the plain forward on the whole sequence (up to
float rounding); tests/models checks that.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .paged import PagedKV, PagedLM
from .tinygpt_config import TinyGPTConfig

__all__ = ["Block", "PagedKV", "TinyGPT", "TinyGPTConfig"]


class Block(nn.Module):
    """One transformer block, split in two halves around attention so both run paths share it."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.gelu = config.gelu
        self.ln1 = nn.LayerNorm(d, eps=config.ln_eps)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=config.ln_eps)
        self.fc = nn.Linear(d, config.ffn_dim)
        self.fc_out = nn.Linear(config.ffn_dim, d)
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
        return x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate=self.gelu)))

    def q_kv(self, x: torch.Tensor, ctx: None) -> tuple[torch.Tensor, torch.Tensor]:
        """`q_kv_heads`, in the form `PagedLM` calls (tinygpt's layers need nothing of the positions)."""
        return self.q_kv_heads(x)


class TinyGPT(PagedLM):
    """The tinygpt decoder-only transformer (`forward`, `log_probs`, `new_kv` and `step` come from `PagedLM`)."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.ln_eps)
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

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Input activations of token ids at positions: token plus position embeddings (no other context)."""
        return self.drop(self.tok_emb(tokens) + self.pos_emb(positions)), None
