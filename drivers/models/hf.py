"""Hugging Face model folders, read without torch: which architecture, which config, which dtype, which files.

A Hugging Face model folder holds `config.json` and its weights as
`model.safetensors` or as shards listed by `model.safetensors.index.json`.
`read_folder` turns one into what llmos needs to admit and load the model:
the llmos architecture ("llama" for model_type llama, mistral and qwen2;
"gpt2" for gpt2), its llmos config dict (through the architecture's
`from_hf`, which refuses shapes the model here would compute differently),
the dtype the weights are stored in, and the weight files. The kernel can
call it (no torch); hf_weights.py loads the tensors on a driver.

Only safetensors weights are read: a folder with `pytorch_model.bin` alone
is refused (loading it would unpickle arbitrary code).
"""

import json
import os
import struct
from dataclasses import dataclass

from .gpt2_config import GPT2Config
from .llama_config import HF_MODEL_TYPES as LLAMA_TYPES
from .llama_config import LlamaConfig

ARCHS = {**{t: ("llama", LlamaConfig) for t in LLAMA_TYPES}, "gpt2": ("gpt2", GPT2Config)}
"""Hugging Face model_type -> (llmos architecture name, its config class)."""

SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
"""safetensors header dtype -> llmos dtype name, for the dtypes models are stored in."""

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


@dataclass
class HFFolder:
    """What a Hugging Face model folder holds, as llmos names it."""

    arch: str  # "llama" or "gpt2"
    config: dict  # the llmos config dict (the architecture's config `to_dict`)
    dtype: str  # the stored weights' dtype: "float32", "float16" or "bfloat16"
    files: list[str]  # absolute paths of the safetensors weight files


def read_folder(folder: str) -> HFFolder:
    """Read a Hugging Face model folder's config.json and find its weight files.

    FileNotFoundError when the folder has no config.json; ValueError for an
    unsupported model_type (naming the supported ones) or config field, an
    index naming a missing shard, no safetensors weights, or weights stored
    in a dtype llmos does not run models in.
    """
    folder = os.path.abspath(folder)
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder} has no config.json (not a Hugging Face model folder)")
    with open(path, encoding="utf-8") as fh:
        hf = json.load(fh)
    kind = hf.get("model_type")
    if kind not in ARCHS:
        raise ValueError(f"model_type {kind!r} of {path} is not supported (supported: {', '.join(sorted(ARCHS))})")
    arch, config_class = ARCHS[kind]
    config = config_class.from_hf(hf).to_dict()
    files = weight_files(folder)
    dtype = hf.get("torch_dtype") or hf.get("dtype")  # transformers 5 writes "dtype"
    if dtype not in SAFETENSORS_DTYPES.values():
        dtype = stored_dtype(files[0])
    return HFFolder(arch=arch, config=config, dtype=dtype, files=files)


def weight_files(folder: str) -> list[str]:
    """The safetensors files of a model folder: `model.safetensors`, or every shard its index names (sorted)."""
    single, index = os.path.join(folder, WEIGHTS), os.path.join(folder, INDEX)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as fh:
            weight_map = json.load(fh).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map")
        files = [os.path.join(folder, name) for name in sorted(set(weight_map.values()))]
        missing = [os.path.basename(f) for f in files if not os.path.isfile(f)]
        if missing:
            raise ValueError(f"{index} names shards that are not in the folder: {missing[:3]}")
        return files
    if os.path.isfile(single):
        return [single]
    raise ValueError(f"{folder} holds no {WEIGHTS} or {INDEX} (only safetensors weights are read)")


def stored_dtype(path: str) -> str:
    """The llmos dtype name of the first tensor in the safetensors file at `path`, read from its header."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path} is not a safetensors file")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise ValueError(f"{path} is not a safetensors file (unreadable header)") from None
    for name, entry in header.items():
        if name != "__metadata__":
            code = entry.get("dtype") if isinstance(entry, dict) else None
            if code not in SAFETENSORS_DTYPES:
                raise ValueError(f"{path} stores {name} as {code}, not one of {sorted(SAFETENSORS_DTYPES)}")
            return SAFETENSORS_DTYPES[code]
    raise ValueError(f"{path} holds no tensors")
