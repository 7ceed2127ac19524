"""Hugging Face weights on the torch side: parameter names, loading a folder, saving one.

A model that can read Hugging Face weights (llama, gpt2) mixes in
`HFParams` and says, in `hf_names`, which Hugging Face parameter name is
which of its own parameters (and whether it is stored transposed, as GPT-2's
Conv1D layers are). `HFParams` then gives `load_hf` (strict: a missing or
unexpected name is a ValueError listing a few) and `hf_tensors` (the tensors
a Hugging Face folder's model.safetensors holds, under those names).

`load_pretrained` builds the model a folder describes (hf.py reads the
folder without torch) and loads every shard; `save_pretrained` writes a
folder transformers' `from_pretrained` reads back: config.json and
model.safetensors, each written under a temporary name and renamed into place.
"""

import json
import os
import shutil

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .hf import WEIGHTS, read_folder

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""llmos dtype name -> torch dtype, for the dtypes models are stored and run in."""


class HFParams:
    """Mixin for an `nn.Module` whose parameters have Hugging Face names (see `hf_names`)."""

    hf_embedding: str = ""
    """The Hugging Face name of the token embedding (a tied head is this parameter)."""

    def hf_names(self) -> dict[str, tuple[str, bool]]:
        """Hugging Face parameter name -> (own parameter name, stored transposed?), every parameter once."""
        raise NotImplementedError

    def hf_name(self, name: str) -> str | None:
        """The canonical Hugging Face name of `name` as a file may spell it, or None for a tensor to skip.

        By default every name is canonical; a model overrides this for older
        spellings and for buffers some files hold (GPT-2's attention masks).
        """
        return name

    def hf_tensors(self) -> dict[str, torch.Tensor]:
        """The model's weights under their Hugging Face names, contiguous, transposed where HF stores them so.

        A tied head is not repeated (as Hugging Face saves it: `lm_head.weight` absent).
        """
        params = dict(self.named_parameters())
        return {
            hf: (params[own].t() if transposed else params[own]).detach().contiguous()
            for hf, (own, transposed) in self.hf_names().items()
        }

    @torch.no_grad()
    def load_hf(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy weights given under Hugging Face names into the model (cast to its dtype and device).

        Strict: a missing or unexpected name, or a tensor of the wrong shape,
        raises ValueError naming a few. `lm_head.weight` of a tied model may
        be given if it equals the token embedding (a state dict holds the alias).
        """
        names = self.hf_names()
        given = {}
        for name, tensor in tensors.items():
            canonical = self.hf_name(name)
            if canonical is not None:
                given[canonical] = tensor
        tied = given.pop("lm_head.weight", None) if "lm_head.weight" not in names else None
        missing, unexpected = sorted(names.keys() - given.keys()), sorted(given.keys() - names.keys())
        if missing or unexpected:
            raise ValueError(f"weights do not fit the model: missing {missing[:4]}, unexpected {unexpected[:4]}")
        params = dict(self.named_parameters())
        for hf, (own, transposed) in names.items():
            tensor, param = given[hf], params[own]
            tensor = tensor.t() if transposed else tensor
            if tensor.shape != param.shape:
                raise ValueError(f"{hf} has shape {list(tensor.shape)}, the model needs {list(param.shape)}")
            param.copy_(tensor)
        if tied is not None:
            embedding = params[names[self.hf_embedding][0]]
            if tied.shape != embedding.shape or not torch.equal(tied.to(embedding), embedding):
                raise ValueError("lm_head.weight differs from the token embedding of a model with tied weights")


def load_pretrained(folder: str, device: str | torch.device = "cpu", dtype: str | None = None):
    """(architecture name, model) of a Hugging Face model folder, weights on `device`, in eval mode.

    The weights keep their stored dtype unless `dtype` (an llmos dtype name)
    says otherwise. The model is built without initializing its weights
    (every one is then loaded). Errors: those of `hf.read_folder`, and
    ValueError for an unreadable weight file or weights that do not fit the config.
    """
    from . import architectures

    info = read_folder(folder)
    name = dtype or info.dtype
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {sorted(DTYPES)}")
    arch = architectures()[info.arch]
    with torch.device("meta"):
        model = arch.model_class(arch.config_class.from_dict(info.config))
    model = model.to(DTYPES[name]).to_empty(device=device)
    tensors = {}
    for path in info.files:
        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                tensors |= {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        except SafetensorError as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    model.load_hf(tensors)
    return info.arch, model.eval()


TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "chat_template.jinja",
)  # fmt: skip
"""What a folder keeps beside the weights for its tokenizer and generation settings, copied as they are."""


def save_pretrained(model: torch.nn.Module, arch_name: str, folder: str, tokenizer_from: str = "") -> None:
    """Write `model` (an `HFParams` model of architecture `arch_name`) as a Hugging Face folder.

    config.json is the config's `to_hf` plus `torch_dtype` (the weights'
    dtype); model.safetensors holds `hf_tensors`; the `TOKENIZER_FILES` of
    the folder `tokenizer_from` (the one the model came from, if any) are
    copied. Each file is written to a temporary name and renamed, so a crash
    never leaves a torn file under the real name.
    """
    tensors = model.hf_tensors()
    dtype = next(iter(tensors.values())).dtype
    names = {v: k for k, v in DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"cannot save weights of dtype {dtype}")
    if arch_name not in ("llama", "gpt2"):
        raise ValueError(f"architecture {arch_name!r} has no Hugging Face form")
    os.makedirs(folder, exist_ok=True)
    config = {**model.config.to_hf(), "torch_dtype": names[dtype]}
    tmp = f".tmp-{os.getpid()}"
    weights = os.path.join(folder, WEIGHTS)
    save_file(tensors, weights + tmp, metadata={"format": "pt"})
    path = os.path.join(folder, "config.json")
    with open(path + tmp, "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
    os.replace(weights + tmp, weights)
    os.replace(path + tmp, path)
    for name in TOKENIZER_FILES if tokenizer_from else ():
        source = os.path.join(tokenizer_from, name)
        if os.path.isfile(source) and os.path.realpath(source) != os.path.realpath(os.path.join(folder, name)):
            shutil.copyfile(source, os.path.join(folder, name) + tmp)
            os.replace(os.path.join(folder, name) + tmp, os.path.join(folder, name))
