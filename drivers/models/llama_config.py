"""llama's config, its Hugging Face config.json translation and the memory it implies, torch-free.

One config covers the Llama family of decoder-only transformers as llmos
runs them (RMSNorm, rotary position embeddings, SwiGLU MLP, grouped-query
attention): Llama 2 and 3 (with Llama 3's rope scaling), Mistral without a
sliding window, and Qwen2 (biased q/k/v projections, `qkv_bias`). Every
field is a flat scalar, as the kernel needs; Llama 3's `rope_scaling`
dict becomes the four `rope_*` fields.

`LlamaConfig.from_hf` reads a Hugging Face config.json (model_type llama,
mistral or qwen2) and refuses what the model here would compute differently
(another activation, another rope scaling, a sliding window, an output or
MLP bias) with a ValueError naming the field. `to_hf` writes the config.json
of the same model: model_type "qwen2" when `qkv_bias` is set (a Llama
config.json has no way to bias q/k/v without also biasing the output
projection), "llama" otherwise.

The kernel admits a model's memory before any driver builds it, and never
imports torch, so `llama_size` (named by the `llmos_model_sizes` hook)
computes the parameter count and the bytes of weights and paged KV storage
that `TorchDriver.model_load` reports once built; tests/models checks the two
agree.
"""

from dataclasses import dataclass

from llmos.syscalls.driver import ModelDesc

from .configs import DictConfig, check_ints, model_desc
from .tokenizer import VOCAB_SIZE

HF_MODEL_TYPES = ("llama", "mistral", "qwen2")
"""The Hugging Face model types `LlamaConfig.from_hf` reads."""


@dataclass
class LlamaConfig(DictConfig):
    """The shape of a llama model. `n_kv_heads` 0 means `n_heads`, `head_dim` 0 means `d_model // n_heads`."""

    vocab_size: int = VOCAB_SIZE
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 0
    head_dim: int = 0
    ffn_dim: int = 344
    max_len: int = 256
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_weights: bool = True
    qkv_bias: bool = False
    rope_factor: float = 1.0  # Llama 3 rope scaling; 1.0 is none, and the three fields below are then unused
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_len: int = 8192

    def __post_init__(self):
        if self.n_kv_heads == 0:
            self.n_kv_heads = self.n_heads
        if self.head_dim == 0 and self.n_heads > 0:
            if self.d_model % self.n_heads:
                raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
            self.head_dim = self.d_model // self.n_heads
        sizes = (self.vocab_size, self.d_model, self.n_layers, self.n_heads, self.n_kv_heads, self.head_dim)
        if min(*sizes, self.ffn_dim, self.max_len, self.rope_original_max_len) < 1:
            raise ValueError("every size in a LlamaConfig must be at least 1")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even (rotary embeddings rotate pairs)")
        if self.rope_theta <= 0 or self.rms_eps <= 0 or self.rope_factor < 1.0:
            raise ValueError("rope_theta and rms_eps must be positive and rope_factor at least 1")
        if self.rope_factor != 1.0 and not 0 < self.rope_low_freq_factor < self.rope_high_freq_factor:
            raise ValueError("rope scaling needs 0 < rope_low_freq_factor < rope_high_freq_factor")

    @classmethod
    def from_hf(cls, hf: dict) -> "LlamaConfig":
        """The config of a Hugging Face config.json (as a dict) of model_type llama, mistral or qwen2.

        ValueError, naming the field, for anything the llama model here would
        not compute the same way.
        """
        kind = hf.get("model_type")
        if kind not in HF_MODEL_TYPES:
            raise ValueError(f"model_type {kind!r} is not one of {', '.join(HF_MODEL_TYPES)}")
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (only silu)")
        for field in ("attention_bias", "mlp_bias"):  # llama's attention_bias also biases the output projection
            if hf.get(field):
                raise ValueError(f"{field} is not supported")
        max_len = hf.get("max_position_embeddings", 2048)
        window = hf.get("sliding_window")
        if hf.get("use_sliding_window") or (kind == "mistral" and window is not None and window < max_len):
            raise ValueError(f"sliding_window {window} is not supported (attention here sees the whole context)")
        d, heads = hf["hidden_size"], hf["num_attention_heads"]
        rope = dict(hf.get("rope_parameters") or {})  # transformers 5 puts theta and scaling here
        scaling = hf.get("rope_scaling") or {}
        rope.update(scaling)
        kind_of_rope = rope.get("rope_type", rope.get("type", "default"))
        if kind_of_rope not in ("default", "llama3"):
            raise ValueError(f"rope_scaling type {kind_of_rope!r} is not supported (only default and llama3)")
        scaled = {}
        if kind_of_rope == "llama3":
            scaled = dict(
                rope_factor=float(rope["factor"]),
                rope_low_freq_factor=float(rope["low_freq_factor"]),
                rope_high_freq_factor=float(rope["high_freq_factor"]),
                rope_original_max_len=int(rope["original_max_position_embeddings"]),
            )
        return cls(
            vocab_size=hf["vocab_size"],
            d_model=d,
            n_layers=hf["num_hidden_layers"],
            n_heads=heads,
            n_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or d // heads,
            ffn_dim=hf["intermediate_size"],
            max_len=max_len,
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_weights=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=kind == "qwen2",
            **scaled,
        )

    def to_hf(self) -> dict:
        """A Hugging Face config.json (as a dict) of this model: model_type "qwen2" if `qkv_bias`, else "llama"."""
        hf = {
            "architectures": ["Qwen2ForCausalLM" if self.qkv_bias else "LlamaForCausalLM"],
            "model_type": "qwen2" if self.qkv_bias else "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.d_model,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.ffn_dim,
            "max_position_embeddings": self.max_len,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "tie_word_embeddings": self.tie_weights,
        }
        if self.qkv_bias:
            hf["use_sliding_window"] = False
        else:
            hf["attention_bias"] = hf["mlp_bias"] = False
        if self.rope_factor != 1.0:
            hf["rope_scaling"] = {
                "rope_type": "llama3",
                "factor": self.rope_factor,
                "low_freq_factor": self.rope_low_freq_factor,
                "high_freq_factor": self.rope_high_freq_factor,
                "original_max_position_embeddings": self.rope_original_max_len,
            }
        return hf


SIZE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "max_len")


def llama_params(cfg: LlamaConfig) -> int:
    """The parameter count of a llama model of this config."""
    d, q, kv = cfg.d_model, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    attention = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if cfg.qkv_bias else 0)
    layer = 2 * d + attention + 3 * d * cfg.ffn_dim  # two norms, attention, gate/up/down
    return cfg.vocab_size * d * (1 if cfg.tie_weights else 2) + cfg.n_layers * layer + d


def llama_size(config: dict, dtype: str, kv_blocks: int, block_size: int) -> ModelDesc:
    """The full config, parameter count and bytes of a llama model and its paged KV storage, from its config.

    KV storage holds the `n_kv_heads` key/value heads only. Raises ValueError
    for a config that does not describe a llama model.
    """
    cfg = LlamaConfig.from_dict(config)
    check_ints(cfg, SIZE_FIELDS)
    kv = cfg.n_layers * kv_blocks * block_size * 2 * cfg.n_kv_heads * cfg.head_dim
    return model_desc(cfg, llama_params(cfg), kv, dtype)
