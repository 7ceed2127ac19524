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
while saving never leaves a torn checkpoint under the real name.
"""

import json
import os
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

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
) -> None:
    """Write `model` (which has a `config` with `to_dict`), `optimizer` and `step` to `path` atomically."""
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
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{index}.{key}"] = value.detach().contiguous()
                else:
                    plain[str(index)][key] = value
        meta["optimizer"] = json.dumps({"param_groups": sd["param_groups"], "state": plain})
    tmp = f"{path}.tmp-{os.getpid()}"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`, tensors placed on `device`.

    A file that is not one (garbage, truncated, other metadata) raises ValueError naming it.
    """
    try:
        return _read(path, device)
    except (SafetensorError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable {FORMAT} file: {exc}") from exc


def _read(path: str, device: str | torch.device) -> Checkpoint:
    """`load_checkpoint` without the translation of a malformed file's errors."""
    with safe_open(path, framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"not an {FORMAT} version {VERSION} file")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
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
