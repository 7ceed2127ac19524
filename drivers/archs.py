"""The built-in model architecture plugin: tinygpt, llama and gpt2.

This module is what the kernel loads; it names each architecture's registry
entry without importing it, so torch is only ever imported in driver hosts,
and the torch-free functions the kernel sizes a model with.
"""

from llmos.syscalls.plugin import hookimpl


@hookimpl
def llmos_models() -> dict[str, str]:
    """Provide tinygpt, llama and gpt2."""
    return {
        "tinygpt": "llmos.drivers.models:tinygpt_architecture",
        "llama": "llmos.drivers.models:llama_architecture",
        "gpt2": "llmos.drivers.models:gpt2_architecture",
    }


@hookimpl
def llmos_model_sizes() -> dict[str, str]:
    """Size tinygpt, llama and gpt2 models from their configs (torch-free)."""
    return {
        "tinygpt": "llmos.drivers.models.tinygpt_config:tinygpt_size",
        "llama": "llmos.drivers.models.llama_config:llama_size",
        "gpt2": "llmos.drivers.models.gpt2_config:gpt2_size",
    }
