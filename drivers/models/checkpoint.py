"""Checkpoints in the safetensors format: model weights, optimizer state, config and step in one file.

Layout of a checkpoint file (one safetensors file, so any safetensors reader
can open it and no pickle is ever loaded):
- tensors `model.<name>`: the model's state dict;
- tensors `optim.<param index>.<key>`: every tensor of the optimizer's
  per-parameter state (AdamW: `step`, `exp_avg`, `exp_avg_sq`);
- the safetensors metadata header (string to string) holds JSON:
  `format` ("llmos-checkpoint"), `version` ("1"), `arch` (e.g. "tinygpt"),
  `config` (the model config's `to_dict`), `step` (an integer),
  `optimizer` (the optimizer's param groups and the non-tensor entries of its
  state, or absent), `extra` (the caller's own JSON, e.g. the data offset)
  and, for a quantized or pruned model, `compression` (layer name -> spec,
  see compression.py: what to rebuild before the tensors `model.<layer>.codes`,
  `.scales`, `.values`, `.mask` fit; the kernel sizes the model from it).

Files are written to a temporary name and renamed into place, so a crash
while saving never leaves a torn checkpoint under the real name. Given a
key, the same safetensors bytes are sealed (sealed.py: AES-GCM in
authenticated chunks) and never touch the disk in plain.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file

from . import sealed
from .safetensors_header import metadata_of

FORMAT = "llmos-checkpoint"
"""The `format` value of the metadata header."""
VERSION = "1"
"""The checkpoint layout version this module writes and reads."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, loaded."""

    arch: str
    config: dict
    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict | None = None
    extra: dict = field(default_factory=dict)
    compression: dict[str, dict] = field(default_factory=dict)  # layer name -> spec; empty: not compressed


def save_checkpoint(
    path: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    step: int = 0,
    arch: str = "tinygpt",
    extra: dict | None = None,
    key: bytes | None = None,
) -> str:
    """Write `model` (which has a `config` with `to_dict`), `optimizer` and `step` to `path` atomically,
    sealed under `key` if one is given; return the SHA-256 (hex) of the file written."""
    from .compress import layout_of

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "config": json.dumps(model.config.to_dict()),
        "step": str(int(step)),
        "extra": json.dumps(extra or {}),
    }
    layout = layout_of(model)
    if layout:
        meta["compression"] = json.dumps(layout)
    if optimizer is not None:
        sd = optimizer.state_dict()
        plain: dict[str, dict] = {}
        for index, entries in sd["state"].items():
            plain[str(index)] = {}
            for name, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{name}"] = value.detach().contiguous()
                else:
                    plain[str(index)][name] = value
        meta["optimizer"] = json.dumps({"param_groups": sd["param_groups"], "state": plain})
    if key:
        return sealed.write(path, save_bytes(tensors, metadata=meta), key)
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)
    return file_sha256(path)


def file_sha256(path: str) -> str:
    """The SHA-256 (hex) of the file at `path` (the audit trail records it for every checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str) -> str:
    """The SHA-256 (hex) of a folder (a Hugging Face-format model): of its manifest, one line per regular file
    (symbolic links followed, as in a Hugging Face cache's snapshots) in byte order of the relative path,
    as `sha256sum` prints it (`<hex>  <path>`). The same digest in a shell:
    `cd F && find -L . -type f -printf '%P\\n' | LC_ALL=C sort | xargs -d '\\n' sha256sum | sha256sum`."""
    paths = (os.path.join(root, name) for root, _, files in os.walk(folder, followlinks=True) for name in files)
    names = sorted(os.path.relpath(path, folder) for path in paths if os.path.isfile(path))
    manifest = "".join(f"{file_sha256(os.path.join(folder, name))}  {name}\n" for name in names)
    return hashlib.sha256(manifest.encode()).hexdigest()


def load_checkpoint(path: str, device: str | torch.device = "cpu", key: bytes | None = None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`, tensors placed on `device`; a sealed one with `key`.

    A file that is not one (garbage, truncated, other metadata) raises ValueError naming it; a sealed one
    that fails authentication, sealed.AuthError (a ValueError: "checkpoint failed authentication").
    """
    try:
        if sealed.is_sealed(path):
            if not key:
                raise ValueError("it is sealed (encrypted), and no storage key was given")
            return _read_sealed(path, device, key)
        return _read(path, device)
    except sealed.AuthError:
        raise
    except (SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable {FORMAT} file: {exc}") from exc


def _read(path: str, device: str | torch.device) -> Checkpoint:
    """`load_checkpoint` of a plain file without the translation of a malformed file's errors."""
    with safe_open(path, framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    return _checkpoint(meta, tensors)


def _read_sealed(path: str, device: str | torch.device, key: bytes) -> Checkpoint:
    """`load_checkpoint` of a sealed file: every chunk authenticated in memory before any tensor is built."""
    data = sealed.read(path, key)
    tensors = {k: v.to(device) for k, v in load_bytes(data).items()}
    return _checkpoint(metadata_of(data), tensors)


def _checkpoint(meta: dict, tensors: dict[str, torch.Tensor]) -> Checkpoint:
    """A Checkpoint from a file's metadata and tensors (ValueError if the metadata is not an llmos one)."""
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"not an {FORMAT} version {VERSION} file")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_state = None
    if "optimizer" in meta:
        saved = json.loads(meta["optimizer"])
        state: dict[int, dict] = {int(i): dict(entries) for i, entries in saved["state"].items()}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        optimizer_state = {"state": state, "param_groups": saved["param_groups"]}
    return Checkpoint(
        arch=meta["arch"],
        config=json.loads(meta["config"]),
        step=int(meta["step"]),
        model_state=model_state,
        optimizer_state=optimizer_state,
        extra=json.loads(meta["extra"]),
        compression=json.loads(meta.get("compression", "{}")),
    )
