"""Model architectures that run on the device side (tinygpt, llama, gpt2), tokenizer, sampling, training, checkpoints.

Driver host processes run model steps, so the model code lives with the
drivers. `architectures()` describes what this package provides in a form a
plugin hook can register: an architecture name mapped to its model class and
config class (a config class has `to_dict` / `from_dict`; a model is built as
`model_class(config_class.from_dict(d))`).
"""

import importlib
from typing import NamedTuple


class Architecture(NamedTuple):
    """One model architecture: its registry name, model class and config class."""

    name: str
    model_class: type
    config_class: type


def architectures() -> dict[str, Architecture]:
    """The architectures this package provides, by name."""
    from .gpt2 import GPT2, GPT2Config
    from .llama import Llama, LlamaConfig
    from .tinygpt import TinyGPT, TinyGPTConfig

    return {
        "tinygpt": Architecture("tinygpt", TinyGPT, TinyGPTConfig),
        "llama": Architecture("llama", Llama, LlamaConfig),
        "gpt2": Architecture("gpt2", GPT2, GPT2Config),
    }


def tinygpt_architecture() -> Architecture:
    """The tinygpt registry entry (the target the `llmos_models` hook names for "tinygpt")."""
    return architectures()["tinygpt"]


def llama_architecture() -> Architecture:
    """The llama registry entry (the target the `llmos_models` hook names for "llama")."""
    return architectures()["llama"]


def gpt2_architecture() -> Architecture:
    """The gpt2 registry entry (the target the `llmos_models` hook names for "gpt2")."""
    return architectures()["gpt2"]


def build_model(arch: str, config: dict):
    """A fresh model of architecture `arch` from a config dict (KeyError for an unknown name)."""
    a = architectures()[arch]
    return a.model_class(a.config_class.from_dict(config))


__all__ = [
    "Architecture",
    "PagedKV",
    "TinyGPT",
    "TinyGPTConfig",
    "architectures",
    "build_model",
    "gpt2_architecture",
    "llama_architecture",
    "tinygpt_architecture",
]


def __getattr__(name: str):
    """The model classes load on first use, so the torch-free modules here (tokenizer,
    decoding) can be imported by the kernel without torch."""
    if name in ("PagedKV", "TinyGPT", "TinyGPTConfig"):
        return getattr(importlib.import_module(".tinygpt", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
