"""tinygpt's config and the memory it implies, torch-free.

The kernel admits a model's memory before any driver builds it, and the
kernel never imports torch, so the size of a tinygpt model is computed here
from its config: `tinygpt_size` gives the parameter count and the bytes of
weights and paged KV storage that `TorchDriver.model_load` reports once built
(tests/models checks the two agree). The `llmos_model_sizes` hook names it.
"""

from dataclasses import asdict, dataclass, fields

from llmos.syscalls.driver import ModelDesc
from llmos.syscalls.dtypes import ITEMSIZE

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


SIZE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "max_len", "mlp_ratio")


def tinygpt_size(config: dict, dtype: str, kv_blocks: int, block_size: int) -> ModelDesc:
    """The full config, parameter count and bytes of a tinygpt model and its paged KV storage, from its config.

    Raises ValueError for a config that does not describe a tinygpt model.
    """
    cfg = TinyGPTConfig.from_dict(config)
    for name in SIZE_FIELDS:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, not {value!r}")
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}")
    d, hidden = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (hidden * d + hidden) + (d * hidden + d)
    params = cfg.vocab_size * d + cfg.max_len * d + cfg.n_layers * block + 2 * d
    if not cfg.tie_weights:
        params += cfg.vocab_size * d
    kv_slots = cfg.n_layers * kv_blocks * block_size * 2 * d  # [layers, blocks, block_size, 2, heads, head_dim]
    return ModelDesc(
        config=cfg.to_dict(), params=params, param_bytes=params * ITEMSIZE[dtype], kv_bytes=kv_slots * ITEMSIZE[dtype]
    )
