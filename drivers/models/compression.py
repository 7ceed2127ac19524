"""What a compressed model holds, torch-free: its layer specs and the bytes they take.

`model_quantize` and `model_prune` replace some of a model's weight matrices
by compressed ones (drivers/models/quantize.py, prune.py). Each replaced
matrix is described by a spec, a flat dict that a checkpoint keeps in its
metadata (`"compression"`: layer name -> spec) so that a loader can rebuild
the same modules before reading their tensors:

- `{"kind": "int8", "out": O, "in": I, "group_size": I}`: one int8 code per
  weight, one scale per output channel;
- `{"kind": "int4", "out": O, "in": I, "group_size": G}`: two 4-bit codes
  per byte, one scale per G weights of a row;
- `{"kind": "sparse", "out": O, "in": I, "kept": K, "pattern": P}`: the K
  weights pruning kept, and a bitmask of where they go (one bit per weight);
  P ("unstructured" or "2:4") says how the matrix is rebuilt.

Scales and kept weights are in the model's dtype. The kernel admits a
compressed checkpoint's memory before any driver loads it, and the kernel
never imports torch, so those bytes are computed here (`held_bytes`) from the
specs and the float model's size.
"""

from llmos.syscalls.dtypes import ITEMSIZE

QUANT_BITS = {"int8": 8, "int4": 4}
"""The weight-only quantization schemes, by name, and the bits of one code."""
DEFAULT_GROUP = 32
"""int4's group size (weights per scale) when the caller gives none."""
PATTERNS = ("unstructured", "2:4")
"""Pruning patterns: the smallest weights of each matrix anywhere, or 2 of every 4 consecutive ones in a row."""


def spec_bytes(spec: dict, dtype: str) -> int:
    """The bytes one compressed matrix holds in a model of `dtype` (codes or kept weights, scales, mask)."""
    size, out, inp = ITEMSIZE[dtype], spec["out"], spec["in"]
    if spec["kind"] == "sparse":
        return spec["kept"] * size + -(-out * inp // 8)
    codes = out * inp * QUANT_BITS[spec["kind"]] // 8
    return codes + out * (inp // spec["group_size"]) * size


def held_bytes(dense_param_bytes: int, layout: dict[str, dict], dtype: str) -> int:
    """The weight bytes of a model whose float form holds `dense_param_bytes` once the matrices of `layout`
    (layer name -> spec) are compressed: each one's float weights replaced by what `spec_bytes` counts."""
    size = ITEMSIZE[dtype]
    return dense_param_bytes + sum(spec_bytes(s, dtype) - s["out"] * s["in"] * size for s in layout.values())


def describe(layout: dict[str, dict]) -> str:
    """A short name of what was done to a model ("int8", "int4/g32", "sparse/2:4"), "" for an uncompressed one."""
    detail = {"int8": lambda s: "", "int4": lambda s: f"/g{s['group_size']}", "sparse": lambda s: f"/{s['pattern']}"}
    return "+".join(sorted({s["kind"] + detail[s["kind"]](s) for s in layout.values()}))


def replace_module(model, name: str, new) -> None:
    """Put module `new` in `model` (a torch module) in place of its submodule called `name` ("blocks.0.qkv")."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
