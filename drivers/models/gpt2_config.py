"""gpt2's config, its Hugging Face config.json translation and the memory it implies, torch-free.

GPT-2 is the shape tinygpt already has (learned positions, pre-norm blocks
with biased layers, GELU MLP, final layer norm, tied head), so the gpt2
model (gpt2.py) is tinygpt with three differences its config carries as
fields: the MLP width (`ffn_dim`, Hugging Face's `n_inner`, 4 * d_model when
unset), the layer norm epsilon (`ln_eps`) and the GELU approximation
(`gelu`: "tanh" for GPT-2's `gelu_new`, "none" for the exact GELU).

`GPT2Config.from_hf` reads a Hugging Face config.json of model_type gpt2 and
refuses, naming the field, what the model here would compute differently
(another activation, attention not scaled by 1/sqrt(head_dim) or scaled by
layer index); `to_hf` writes the config.json of the same model. `gpt2_size`,
named by the `llmos_model_sizes` hook, gives the parameter count and the
bytes of weights and paged KV storage the driver reports once built.
"""

from dataclasses import dataclass

from llmos.syscalls.driver import ModelDesc

from .configs import DictConfig, MultiHead, gpt_size
from .tokenizer import VOCAB_SIZE

GELUS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}
"""Hugging Face activation_function -> the `approximate` of torch's GELU that computes it."""


@dataclass
class GPT2Config(MultiHead, DictConfig):
    """The shape of a gpt2 model. `ffn_dim` 0 means 4 * d_model."""

    vocab_size: int = VOCAB_SIZE
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_len: int = 256
    ffn_dim: int = 0
    ln_eps: float = 1e-5
    gelu: str = "tanh"
    tie_weights: bool = True
    dropout: float = 0.0

    def __post_init__(self):
        if self.ffn_dim == 0:
            self.ffn_dim = 4 * self.d_model
        if min(self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.max_len, self.ffn_dim) < 1:
            raise ValueError("every size in a GPT2Config must be at least 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.gelu not in ("tanh", "none"):
            raise ValueError(f"gelu {self.gelu!r} is not 'tanh' or 'none'")
        if self.ln_eps <= 0:
            raise ValueError("ln_eps must be positive")

    @classmethod
    def from_hf(cls, hf: dict) -> "GPT2Config":
        """The config of a Hugging Face config.json (as a dict) of model_type gpt2.

        Dropout rates are not kept (llmos runs inference; training here uses none).
        """
        if hf.get("model_type") != "gpt2":
            raise ValueError(f"model_type {hf.get('model_type')!r} is not gpt2")
        act = hf.get("activation_function", "gelu_new")
        if act not in GELUS:
            raise ValueError(f"activation_function {act!r} is not supported (supported: {', '.join(GELUS)})")
        if not hf.get("scale_attn_weights", True):
            raise ValueError("scale_attn_weights false is not supported")
        if hf.get("scale_attn_by_inverse_layer_idx"):
            raise ValueError("scale_attn_by_inverse_layer_idx is not supported")
        if hf.get("add_cross_attention"):
            raise ValueError("add_cross_attention is not supported")
        return cls(
            vocab_size=hf.get("vocab_size", 50257),
            d_model=hf.get("n_embd", 768),
            n_layers=hf.get("n_layer", 12),
            n_heads=hf.get("n_head", 12),
            max_len=hf.get("n_positions", 1024),
            ffn_dim=hf.get("n_inner") or 0,
            ln_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            gelu=GELUS[act],
            tie_weights=bool(hf.get("tie_word_embeddings", True)),
        )

    def to_hf(self) -> dict:
        """A Hugging Face config.json (as a dict) of this model, model_type gpt2, dropout off."""
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_embd": self.d_model,
            "n_layer": self.n_layers,
            "n_head": self.n_heads,
            "n_positions": self.max_len,
            "n_inner": self.ffn_dim,
            "layer_norm_epsilon": self.ln_eps,
            "activation_function": "gelu_new" if self.gelu == "tanh" else "gelu",
            "tie_word_embeddings": self.tie_weights,
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
        }


SIZE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "max_len", "ffn_dim")


def gpt2_size(config: dict, dtype: str, kv_blocks: int, block_size: int) -> ModelDesc:
    """The full config, parameter count and bytes of a gpt2 model and its paged KV storage, from its config.

    Raises ValueError for a config that does not describe a gpt2 model.
    """
    return gpt_size(GPT2Config.from_dict(config), SIZE_FIELDS, dtype, kv_blocks, block_size)
