"""The built-in model architecture plugin: tinygpt, llama and gpt2, and Hugging Face-format folders.

This module is what the kernel loads; it names each architecture's registry
entry without importing it, so torch is only ever imported in driver hosts,
the torch-free functions the kernel sizes models with, and, torch-free too,
how a model folder is read and which tokenizer a model gets.
"""

from llmos.syscalls.plugin import ModelFolder, Tokenizer, hookimpl


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


@hookimpl
def llmos_model_folder(folder: str) -> ModelFolder | None:
    """Read a Llama- or GPT-2-family folder's config.json.

    A model_type it does not serve is a ValueError naming the ones it does:
    built-in plugins are registered first, so pluggy asks this one last, after
    every third-party plugin has passed.
    """
    from llmos.drivers.models import hf

    found = hf.read_folder(folder)
    return ModelFolder(found.arch, found.config, found.dtype)


@hookimpl
def llmos_tokenizer(arch: str, config: dict, folder: str) -> Tokenizer | None:
    """A model folder's own tokenizer.json; the byte tokenizer for tinygpt; else none."""
    from llmos.drivers.models.hf_tokenizer import folder_tokenizer
    from llmos.drivers.models.tokenizer import ByteTokenizer

    if folder:
        return folder_tokenizer(folder)
    return ByteTokenizer() if arch == "tinygpt" else None
