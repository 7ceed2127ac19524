"""Magnitude pruning of a model's linear layers, unstructured or 2:4, held sparse.

Pruning sets the smallest-magnitude weights of a matrix to zero:
- "unstructured": the `round(sparsity * n)` smallest of its n weights,
  wherever they are (ties broken by torch's top-k);
- "2:4": the 2 smallest of every 4 consecutive weights of a row (sparsity
  exactly one half: the pattern sparse tensor cores run).

A pruned matrix is held as a `SparseLinear`: the kept weights, in row-major
order, and a bitmask of where they go (one bit per weight), so the memory
the model holds falls with the sparsity (a float32 matrix at sparsity s keeps
`(1 - s) * 4 + 1/8` bytes a weight). Each use rebuilds the dense matrix and
multiplies as usual: CPUs have no kernel that gains from half the weights
being zero at these sizes, so pruning frees memory, not time. Rebuilding
costs: an unstructured matrix scatters its kept weights through the mask
(`masked_scatter_`, about 0.3 ms for 65k weights on one thread); a 2:4 one
looks each group's two places up in a table of the 16 four-bit masks and
scatters by group, several times faster.

The linear layers of the transformer blocks are pruned; the LM head (and a
tied embedding) is left dense, as the pruning literature (SparseGPT, Wanda)
leaves it: it is small next to the blocks and pruning it costs the most.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .compression import PATTERNS, replace_module


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """A flat bool tensor as bytes, eight bits a byte, least significant first (the end padded with zeros)."""
    pad = -len(bits) % 8
    bits = torch.cat((bits, bits.new_zeros(pad))).view(-1, 8).to(torch.uint8)
    return (bits << torch.arange(8, dtype=torch.uint8, device=bits.device)).sum(-1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` bits of `pack_bits`'s bytes, as a flat bool tensor."""
    bits = 1 << torch.arange(8, dtype=torch.uint8, device=packed.device)
    return (packed[:, None] & bits).flatten()[:count] != 0


PAIRS = torch.tensor([([i for i in range(4) if m >> i & 1] + [0, 1])[:2] for m in range(16)])
"""The two kept places of a 2:4 group, by its four-bit mask (masks without exactly two bits never occur)."""


class SparseLinear(nn.Module):
    """A pruned `nn.Linear`: the kept weights `values` [kept], their places in `mask` (packed bits of the
    [out, in] matrix, row-major), and the bias as it was. `pattern` "2:4" rebuilds the matrix by groups."""

    def __init__(self, out_features: int, in_features: int, kept: int, bias: bool = False, dtype=torch.float32,
                 device=None, pattern: str = "unstructured"):  # fmt: skip
        super().__init__()
        self.out_features, self.in_features, self.pattern = out_features, in_features, pattern
        self.register_buffer("values", torch.zeros(kept, dtype=dtype, device=device))
        self.register_buffer("mask", torch.zeros(-(-out_features * in_features // 8), dtype=torch.uint8, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def empty(cls, spec: dict, bias: bool, dtype: torch.dtype, device) -> "SparseLinear":
        """An empty module of `spec` (compression.py), to be filled from a checkpoint."""
        return cls(spec["out"], spec["in"], spec["kept"], bias, dtype, device, spec["pattern"])

    def spec(self) -> dict:
        """The matrix's spec, as a checkpoint keeps it (see compression.py)."""
        return {"kind": "sparse", "out": self.out_features, "in": self.in_features, "kept": len(self.values),
                "pattern": self.pattern}  # fmt: skip

    def dense(self) -> torch.Tensor:
        """The pruned matrix [out, in], zeros where weights were pruned."""
        n = self.out_features * self.in_features
        if self.pattern == "2:4":  # each group of 4 is one half of a mask byte, its kept 2 a row of PAIRS
            groups = torch.stack((self.mask & 15, self.mask >> 4), dim=-1).flatten()[: n // 4]
            places = PAIRS.to(groups.device)[groups.long()]
            w = self.values.new_zeros(n // 4, 4).scatter_(1, places, self.values.view(-1, 2))
        else:
            w = self.values.new_zeros(n).masked_scatter_(unpack_bits(self.mask, n), self.values)
        return w.view(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ W.T + b` with the pruned matrix rebuilt dense."""
        return F.linear(x, self.dense().to(x.dtype), self.bias)


def keep_mask(weight: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    """Where `weight` [out, in] keeps its weights under magnitude pruning: a bool tensor of its shape.

    Under "2:4" (sparsity 0.5) the rows must hold a multiple of 4 weights.
    """
    out, inp = weight.shape
    magnitude = weight.detach().abs().float()
    keep = torch.ones(out * inp, dtype=torch.bool, device=weight.device)
    if pattern == "2:4":
        groups = magnitude.view(-1, 4)
        smallest = groups.topk(2, dim=-1, largest=False).indices
        return keep.view(-1, 4).scatter(1, smallest, False).view(out, inp)
    pruned = round(sparsity * out * inp)
    keep[magnitude.flatten().topk(pruned, largest=False).indices] = False
    return keep.view(out, inp)


@torch.no_grad()
def prune_model(model: nn.Module, sparsity: float, pattern: str) -> dict[str, dict]:
    """Prune every `nn.Linear` of `model.blocks` in place, each to a `SparseLinear`; the layout (name -> spec).

    ValueError (before anything changed) for a pattern other than `PATTERNS`, a sparsity outside [0, 1), or
    2:4 at a sparsity other than 0.5 or on rows that do not split into fours.
    """
    targets = [(name, m) for name, m in model.named_modules() if name.startswith("blocks.") and type(m) is nn.Linear]
    if pattern not in PATTERNS or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"prune needs a pattern of {PATTERNS} and a sparsity in [0, 1), not {pattern!r} {sparsity}")
    if pattern == "2:4" and (sparsity != 0.5 or any(m.weight.shape[1] % 4 for _, m in targets)):
        raise ValueError("2:4 pruning is sparsity 0.5, on rows of a multiple of 4 weights")
    layout = {}
    for name, module in targets:
        keep = keep_mask(module.weight, sparsity, pattern)
        sparse = SparseLinear(*module.weight.shape, int(keep.sum()), module.bias is not None,
                              module.weight.dtype, module.weight.device, pattern)  # fmt: skip
        sparse.values.copy_(module.weight[keep])
        sparse.mask.copy_(pack_bits(keep.flatten()))
        if module.bias is not None:
            sparse.bias.copy_(module.bias)
        replace_module(model, name, sparse)
        layout[name] = sparse.spec()
    return layout
