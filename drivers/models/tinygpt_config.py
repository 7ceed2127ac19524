"""tinygpt's config and the memory it implies, torch-free.

The kernel admits a model's memory before any driver builds it, and the
kernel never imports torch, so the size of a tinygpt model is computed here
from its config: `tinygpt_size` gives the parameter count and the bytes of
weights and paged KV storage that `TorchDriver.model_load` reports once built
(tests/models checks the two agree). The `llmos_model_sizes` hook names it.
"""

from dataclasses import dataclass

from llmos.syscalls.driver import ModelDesc

from .configs import DictConfig, MultiHead, gpt_size
from .tokenizer import VOCAB_SIZE


@dataclass
class TinyGPTConfig(MultiHead, DictConfig):
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
    def ffn_dim(self) -> int:
        """Width of the MLP's hidden layer."""
        return self.mlp_ratio * self.d_model

    ln_eps = 1e-5
    """Layer norm epsilon (torch's default; a gpt2 config makes it a field)."""
    gelu = "none"
    """The MLP's GELU: exact ("none"; a gpt2 config makes it a field, "tanh" there)."""


SIZE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "max_len", "mlp_ratio")


def tinygpt_size(config: dict, dtype: str, kv_blocks: int, block_size: int) -> ModelDesc:
    """The full config, parameter count and bytes of a tinygpt model and its paged KV storage, from its config.

    Raises ValueError for a config that does not describe a tinygpt model.
    """
    return gpt_size(TinyGPTConfig.from_dict(config), SIZE_FIELDS, dtype, kv_blocks, block_size)
