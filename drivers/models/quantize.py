"""Weight-only quantization of a model's linear layers: int8 per output channel, int4 in groups.

A quantized matrix keeps integer codes and scales instead of float weights,
and is dequantized on the fly, in the model's dtype, each time it is used:
`F.linear(x, codes * scales)`. Activations, biases, norms, the KV cache and
position embeddings stay in the model's dtype. So the memory a model holds
falls to about a quarter (int8) or a sixth (int4, groups of 32) of a float32
model's, and every step pays a dequantization instead.

- int8, symmetric per output channel: a row's scale is its largest
  magnitude / 127, codes are round(w / scale) in [-127, 127].
- int4, symmetric per group of `group_size` consecutive weights of a row:
  the group's scale is its largest magnitude / 7, codes are round(w / scale)
  in [-7, 7], two 4-bit two's-complement codes a byte: byte j of a row holds
  column j in its low half and column j + in/2 in its high half, so two
  shifts of the bytes seen as int8 give both halves of the row, signed.

An int8 layer scales its output instead of its weights (one scale per output
channel commutes with the matmul): `F.linear(x, codes) * scales`, which
measured about 1.6 times as fast as dequantizing first on a 512 x 128 layer.
torch's own CPU kernels for this (`torch._weight_int8pack_mm`,
`torch._weight_int4pack_mm_for_cpu`) measured slower than these lines at
the sizes llmos runs (41 and 100 us against 16 and 42 us a decode step of a
512 x 128 layer, one thread).

Why by hand rather than torchao: torchao 0.18 (the newest on the index)
imports with torch 2.13 on the CPU, but its int4 weight-only layouts need
the `mslk` CUDA kernels or CUDA bfloat16 (none runs on the CPU), its int8
tensor subclass ran a small model's linear layers about twice as slowly as
float here, and its tensors do not go through safetensors without its
prototype flattening. The few lines below run on every torch device.

The LM head is a linear layer too. A tied head is the token embedding's
matrix, so tying makes that table a `QuantEmbedding`: the head's output
channels are the embedding's rows, and an embedding lookup dequantizes only
the rows it reads.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .compression import QUANT_BITS, replace_module

INT4_MAX = 7
"""The largest int4 code used: codes are symmetric, [-7, 7] (-8 is left out, so a scale maps both signs alike)."""
INT8_MAX = 127
"""The largest int8 code: [-127, 127]."""


class Quantized(nn.Module):
    """A weight matrix [out, in] held as int8 codes, or packed int4 ones, with a scale per group of a row.

    Buffers: `codes` (int8 [out, in] for int8; uint8 [out, in / 2] for int4,
    two codes a byte: see the module's doc) and `scales` ([out, in / group_size],
    the model's dtype).
    """

    def __init__(self, kind: str, out_features: int, in_features: int, group_size: int, dtype=torch.float32,
                 device=None):  # fmt: skip
        super().__init__()
        if kind not in QUANT_BITS:
            raise ValueError(f"unknown quantization {kind!r}")
        if group_size < 1 or in_features % group_size:
            raise ValueError(f"a row of {in_features} weights does not split into groups of {group_size}")
        if kind == "int4" and in_features % 2:
            raise ValueError(f"int4 packs two weights a byte: a row of {in_features} weights is odd")
        self.kind, self.out_features, self.in_features, self.group_size = kind, out_features, in_features, group_size
        cols = in_features if kind == "int8" else in_features // 2
        code_dtype = torch.int8 if kind == "int8" else torch.uint8
        self.register_buffer("codes", torch.zeros(out_features, cols, dtype=code_dtype, device=device))
        self.register_buffer("scales", torch.ones(out_features, in_features // group_size, dtype=dtype, device=device))

    def spec(self) -> dict:
        """The matrix's spec, as a checkpoint keeps it (see compression.py)."""
        return {"kind": self.kind, "out": self.out_features, "in": self.in_features, "group_size": self.group_size}

    @torch.no_grad()
    def fill(self, weight: torch.Tensor) -> None:
        """Quantize the float matrix `weight` [out, in] into this module's codes and scales."""
        w = weight.detach().float().view(self.out_features, -1, self.group_size)
        top = INT8_MAX if self.kind == "int8" else INT4_MAX
        scale = (w.abs().amax(-1, keepdim=True) / top).clamp(min=torch.finfo(torch.float32).tiny)
        codes = torch.round(w / scale).clamp(-top, top).flatten(1).to(torch.int8)
        if self.kind == "int4":
            half = self.in_features // 2
            codes = ((codes[:, :half] & 15) | (codes[:, half:] << 4)).view(torch.uint8)
        self.codes.copy_(codes)
        self.scales.copy_(scale.squeeze(-1))

    def dense(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The dequantized matrix [out, in] in the scales' dtype, or only its `rows` ([..., in])."""
        codes = self.codes if rows is None else self.codes[rows]
        scales = self.scales if rows is None else self.scales[rows]
        if self.kind == "int4":
            signed = codes.view(torch.int8)
            codes = torch.cat(((signed << 4) >> 4, signed >> 4), dim=-1)  # arithmetic shifts: the sign comes along
        return (codes.unflatten(-1, (-1, self.group_size)) * scales[..., None]).flatten(-2)


class QuantLinear(Quantized):
    """A quantized `nn.Linear`: the same call, the weights dequantized on the fly, the bias kept as it was."""

    def __init__(self, kind: str, out_features: int, in_features: int, group_size: int, bias: bool = False,
                 dtype=torch.float32, device=None):  # fmt: skip
        super().__init__(kind, out_features, in_features, group_size, dtype, device)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x @ W.T + b` in `x`'s dtype: int8 scales the output of the codes' matmul, int4 dequantizes W first."""
        if self.kind == "int4":
            return F.linear(x, self.dense().to(x.dtype), self.bias)
        y = F.linear(x, self.codes.to(x.dtype)) * self.scales[:, 0].to(x.dtype)
        return y if self.bias is None else y + self.bias


class QuantEmbedding(Quantized):
    """A quantized token embedding (the matrix of a tied LM head): lookups dequantize the rows they read.

    `weight` is the whole dequantized table, for the tied head's `h @ weight.T`.
    """

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table [vocab, d]."""
        return self.dense()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embeddings of token ids `tokens` [...]: [..., d]."""
        return self.dense(tokens)


def quantized_module(name: str, spec: dict, bias: bool, dtype: torch.dtype, device) -> Quantized:
    """An empty quantized module of `spec`: a `QuantEmbedding` for the token embedding `tok_emb`, else a `QuantLinear`."""
    shape = (spec["kind"], spec["out"], spec["in"], spec["group_size"])
    if name == "tok_emb":
        return QuantEmbedding(*shape, dtype=dtype, device=device)
    return QuantLinear(*shape, bias=bias, dtype=dtype, device=device)


def quantize_module(name: str, module: nn.Module, kind: str, group_size: int) -> Quantized:
    """The quantized form of the linear layer (or tied embedding) `module`; ValueError if its rows do not split
    into groups of `group_size` (int8's group is the whole row: `group_size` is ignored)."""
    w = module.weight
    out, inp = w.shape
    spec = {"kind": kind, "out": out, "in": inp, "group_size": inp if kind == "int8" else group_size}
    bias = getattr(module, "bias", None)
    q = quantized_module(name, spec, bias is not None, w.dtype, w.device)
    q.fill(w)
    if bias is not None:
        q.bias.data.copy_(bias.detach())
    return q


def quantize_targets(model: nn.Module) -> list[str]:
    """The names of the matrices quantization replaces: every `nn.Linear`, and the token embedding `tok_emb`
    when the LM head is tied to it (the model has no `head` of its own)."""
    names = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    return names + ["tok_emb"] if getattr(model, "head", None) is None else names


@torch.no_grad()
def quantize_model(model: nn.Module, kind: str, group_size: int) -> dict[str, dict]:
    """Quantize `model`'s linear layers (`quantize_targets`) in place, one at a time; the layout (name -> spec).

    ValueError (before anything changed) if a row does not split into groups of `group_size`.
    """
    if kind not in QUANT_BITS or (kind == "int4" and group_size < 1):
        raise ValueError(f"quantization is one of {sorted(QUANT_BITS)} with a group size >= 1, not {kind!r} {group_size}")
    names = quantize_targets(model)
    for name in names:
        inp = model.get_submodule(name).weight.shape[1]
        if kind == "int4" and (inp % group_size or inp % 2):
            raise ValueError(f"{name}: a row of {inp} weights does not split into int4 groups of {group_size}")
    layout = {}
    for name in names:
        q = quantize_module(name, model.get_submodule(name), kind, group_size)
        replace_module(model, name, q)
        layout[name] = q.spec()
    return layout
