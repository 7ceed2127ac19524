"""llama: the Llama family of decoder-only transformers (Llama 2/3, Mistral, Qwen2 shapes).

Each layer: RMSNorm, attention with rotary position embeddings (applied to
queries and keys, keys cached rotated) and grouped-query heads (`n_kv_heads`
key/value heads each serve `n_heads // n_kv_heads` query heads; the paged
cache holds only those), residual, RMSNorm, SwiGLU MLP (`down(silu(gate(x)) * up(x))`),
residual. A final RMSNorm and an LM head, optionally tied to the token
embedding; optional q/k/v biases (Qwen2). Llama 3's rope scaling stretches
the low rotary frequencies (`rope_factor` and its companions).

`forward`, `log_probs`, `new_kv` and the paged `step` come from
`paged.PagedLM`; this module holds only the per-layer math. `load_hf` and
`hf_tensors` read and give the weights under Hugging Face's parameter names
(`model.layers.0.self_attn.q_proj.weight`, ...), so a Hugging Face folder's
safetensors load directly (see hf_weights.py).
"""

import torch
import torch.nn.functional as F
from torch import nn

from .hf_weights import HFParams
from .llama_config import LlamaConfig
from .paged import PagedLM

__all__ = ["Llama", "LlamaConfig", "LlamaLayer", "RMSNorm", "rope_frequencies"]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale, computed in float32 whatever the input dtype."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` [..., d] divided by its root mean square, then scaled."""
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_frequencies(config: LlamaConfig) -> torch.Tensor:
    """The rotary angular frequencies [head_dim // 2] (float32, on the CPU), Llama 3 scaling applied.

    Channel pair `i` turns by `theta ** (-2i / head_dim)` radians per position.
    With `rope_factor` > 1, frequencies whose wavelength exceeds
    `rope_original_max_len / rope_low_freq_factor` are divided by the factor,
    those shorter than `rope_original_max_len / rope_high_freq_factor` are
    kept, and the ones between are blended linearly in
    `rope_original_max_len / wavelength`.
    """
    hd = config.head_dim
    freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64, device="cpu").float() / hd))
    if config.rope_factor == 1.0:
        return freq
    low, high, orig = config.rope_low_freq_factor, config.rope_high_freq_factor, config.rope_original_max_len
    periods = orig * freq / (2 * torch.pi)  # how many turns fit the original context: orig / wavelength
    blend = ((periods - low) / (high - low)).clamp(0.0, 1.0)  # 0: long waves (scaled), 1: short waves (kept)
    return (1.0 - blend) * freq / config.rope_factor + blend * freq


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of `x` [..., H, hd]: the first and second half of each head are the pairs' two coordinates."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class LlamaLayer(nn.Module):
    """One llama layer, split in two halves around attention so both run paths share it."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        d, hd, bias = config.d_model, config.head_dim, config.qkv_bias
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads
        self.attn_norm = RMSNorm(d, config.rms_eps)
        self.q = nn.Linear(d, config.n_heads * hd, bias=bias)
        self.k = nn.Linear(d, config.n_kv_heads * hd, bias=bias)
        self.v = nn.Linear(d, config.n_kv_heads * hd, bias=bias)
        self.o = nn.Linear(config.n_heads * hd, d, bias=False)
        self.mlp_norm = RMSNorm(d, config.rms_eps)
        self.gate = nn.Linear(d, config.ffn_dim, bias=False)
        self.up = nn.Linear(d, config.ffn_dim, bias=False)
        self.down = nn.Linear(config.ffn_dim, d, bias=False)

    def q_kv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated queries [..., n_heads, hd] and rotated keys with values [..., 2, n_kv_heads, hd] of `x` [..., d].

        `rope` is the (cos, sin) pair of each row's position, [..., 1, hd // 2].
        """
        h = self.attn_norm(x)
        q = rotate(self.q(h).unflatten(-1, (self.n_heads, -1)), *rope)
        k = rotate(self.k(h).unflatten(-1, (self.n_kv_heads, -1)), *rope)
        return q, torch.stack((k, self.v(h).unflatten(-1, (self.n_kv_heads, -1))), dim=-3)

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer's output given its input `x` and the attention result `attended` (heads merged)."""
        x = x + self.o(attended)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(PagedLM, HFParams):
    """The llama decoder-only transformer (`forward`, `log_probs`, `new_kv` and `step` come from `PagedLM`)."""

    hf_embedding = "model.embed_tokens.weight"

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(LlamaLayer(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.rms_eps)
        # tied: the head is the token embedding itself (no second parameter, so checkpoints hold no alias)
        self.head = None if config.tie_weights else nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.freq = rope_frequencies(config)  # a plain attribute: kept in float32, moved to the device on use
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """Token embeddings of `tokens`, and the rotary (cos, sin) of `positions`, [..., 1, hd // 2] each."""
        x = self.tok_emb(tokens)
        if self.freq.device != positions.device:
            self.freq = self.freq.to(positions.device)
        angles = (positions.float()[:, None] * self.freq)[..., None, :]  # [T, 1, hd // 2]
        return x, (angles.cos().to(x.dtype), angles.sin().to(x.dtype))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of hidden states `h` [..., d] (final norm, then the head)."""
        h = self.norm(h)
        return self.head(h) if self.head is not None else h @ self.tok_emb.weight.t()

    def hf_names(self) -> dict[str, tuple[str, bool]]:
        """Hugging Face parameter name -> (this module's parameter name, transposed?); see `HFParams`."""
        names = {"model.embed_tokens.weight": "tok_emb.weight", "model.norm.weight": "norm.weight"}
        if self.head is not None:
            names["lm_head.weight"] = "head.weight"
        pieces = {"input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm"}
        pieces |= {f"self_attn.{p}_proj": p for p in "qkvo"} | {f"mlp.{p}_proj": p for p in ("gate", "up", "down")}
        for i in range(self.config.n_layers):
            for theirs, ours in pieces.items():
                names[f"model.layers.{i}.{theirs}.weight"] = f"blocks.{i}.{ours}.weight"
            if self.config.qkv_bias:
                for p in "qkv":
                    names[f"model.layers.{i}.self_attn.{p}_proj.bias"] = f"blocks.{i}.{p}.bias"
        return {hf: (ours, False) for hf, ours in names.items()}
