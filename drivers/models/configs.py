"""What every architecture's config shares, torch-free: the dict round trip and the size report.

A model config is a dataclass of flat `int | float | str | bool` fields: the
kernel stores it, sends it to drivers and reads `vocab_size` and `max_len`
from it, so `to_dict` must give JSON-ready scalars and `from_dict` must
refuse fields it does not know. The size functions the `llmos_model_sizes`
hook names (`tinygpt_size`, `llama_size`, `gpt2_size`) check a config's
integer fields and turn a parameter count and a KV element count into the
`ModelDesc` the driver reports once it has built the model.
"""

from dataclasses import asdict, fields

from llmos.syscalls.driver import ModelDesc
from llmos.syscalls.dtypes import ITEMSIZE


class DictConfig:
    """Mixin for config dataclasses: `to_dict` / `from_dict` of flat scalar fields."""

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """A config from `to_dict`'s output; unknown keys are an error, missing ones take defaults.

        A value of the wrong type that the config's own checks trip over is a
        ValueError too, like every other config the kernel cannot use.
        """
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"bad {cls.__name__}: {exc}") from None


def check_ints(config, names) -> None:
    """ValueError unless every field `names` of `config` is an integer (a bool is not one)."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, not {value!r}")


def model_desc(config, params: int, kv_elements: int, dtype: str) -> ModelDesc:
    """The `ModelDesc` of a model of `config` with `params` parameters and `kv_elements` KV cache elements."""
    if dtype not in ITEMSIZE:
        raise ValueError(f"unknown dtype {dtype!r}")
    size = ITEMSIZE[dtype]
    return ModelDesc(config=config.to_dict(), params=params, param_bytes=params * size, kv_bytes=kv_elements * size)


class MultiHead:
    """Mixin for configs of plain multi-head attention (tinygpt, gpt2): heads of `d_model // n_heads` channels."""

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads: as many as query heads."""
        return self.n_heads


def gpt_size(cfg, int_fields, dtype: str, kv_blocks: int, block_size: int) -> ModelDesc:
    """The `ModelDesc` of a GPT-2 shaped model (tinygpt, gpt2: learned positions, biased layers, layer norms).

    `cfg` has `vocab_size`, `d_model`, `n_layers`, `max_len`, `ffn_dim` and
    `tie_weights`; `int_fields` are the fields that must be integers.
    """
    check_ints(cfg, int_fields)
    d, hidden = cfg.d_model, cfg.ffn_dim
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (hidden * d + hidden) + (d * hidden + d)
    params = cfg.vocab_size * d * (1 if cfg.tie_weights else 2) + cfg.max_len * d + cfg.n_layers * block + 2 * d
    kv = cfg.n_layers * kv_blocks * block_size * 2 * d  # [layers, blocks, block_size, 2, heads, head_dim]
    return model_desc(cfg, params, kv, dtype)
