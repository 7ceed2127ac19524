"""The conformance kit's test data: one case per (op, dtype), torch's answer, and the tolerance.

A `Case` holds seeded inputs for one op of the ABI op set in one dtype, with
parameters other than the defaults where the op has any (so a driver that
drops parameters fails). `reference()` is what torch computes on the CPU from
the same inputs: in float64 for floating dtypes, exactly for the others, or
None where torch itself refuses (bool subtraction): a driver must then fail
with EINVAL too. `compare` holds a driver's result to the reference within
the tolerance of the dtype the device computes in.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llmos.syscalls.dtypes import FLOATING
from llmos.syscalls.ops import OPS, infer

# (rtol, atol) for results computed in each floating dtype; atol is scaled by the result's magnitude
TOLERANCE: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-9),
    "float32": (1e-4, 1e-4),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1.6e-2, 1e-2),
}

INPUT_SHAPES: dict[str, list[list[int]]] = {
    "add": [[4, 8], [8]],  # broadcast
    "sub": [[4, 8], [4, 1]],
    "mul": [[1, 8], [4, 8]],
    "matmul": [[2, 6, 16], [16, 8]],  # batched times plain
    "softmax": [[4, 8]],
    "layer_norm": [[4, 8], [8], [8]],  # with weight and bias
    "gelu": [[4, 8]],
    "relu": [[4, 8]],
}

PARAMS: dict[str, dict] = {"softmax": {"dim": 0}, "layer_norm": {"eps": 1e-3}, "gelu": {"approximate": "tanh"}}

REFERENCE = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "matmul": torch.matmul,
    "softmax": lambda x, dim: torch.softmax(x, dim),
    "layer_norm": lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], w, b, eps),
    "gelu": lambda x, approximate: F.gelu(x, approximate=approximate),
    "relu": torch.relu,
}


def sample(shape: list[int], dtype: str, generator: torch.Generator) -> torch.Tensor:
    """Seeded values of `dtype`: normal floats, small integers (no overflow in products), random bools."""
    if dtype in FLOATING:
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(getattr(torch, dtype))
    if dtype == "bool":
        return torch.randint(0, 2, shape, generator=generator).bool()
    low = 0 if dtype == "uint8" else -6
    return torch.randint(low, 7, shape, generator=generator).to(getattr(torch, dtype))


@dataclass(frozen=True)
class Case:
    """One op on seeded inputs of one dtype; `params` complete (defaults filled in as the kernel does)."""

    op: str
    dtype: str
    inputs: tuple[torch.Tensor, ...]
    params: dict
    out_shape: list[int]

    def reference(self) -> torch.Tensor | None:
        """torch's result on the CPU (float64 for floating dtypes), or None where torch refuses the op."""
        xs = [x.double() if self.dtype in FLOATING else x for x in self.inputs]
        try:
            return REFERENCE[self.op](*xs, **self.params)
        except RuntimeError:
            return None

    def __str__(self) -> str:
        return f"{self.op}({', '.join(str(list(x.shape)) for x in self.inputs)}, {self.params}) in {self.dtype}"


def make_case(op: str, dtype: str, shapes: list[list[int]] | None = None, seed: int = 0) -> Case:
    """The case of `op` in `dtype` on `shapes` (default `INPUT_SHAPES[op]`), with the kit's parameters."""
    shapes = shapes or INPUT_SHAPES[op]
    gen = torch.Generator().manual_seed(seed)
    inputs = tuple(sample(s, dtype, gen) for s in shapes)
    out_shape, _, params = infer(op, [tuple(s) for s in shapes], [dtype] * len(shapes), PARAMS.get(op, {}))
    return Case(op, dtype, inputs, params, list(out_shape))


def op_cases(ops: list[str], dtypes: list[str]) -> list[Case]:
    """Every case a device with these ops and dtypes must get right (floating-only ops skip other dtypes)."""
    return [
        make_case(op, dtype, seed=i)
        for i, (op, dtype) in enumerate((op, d) for op in sorted(ops) for d in dtypes)
        if not (OPS[op].floating_only and dtype not in FLOATING)
    ]


def runnable_cases(ops: list[str], dtypes: list[str]) -> list[Case]:
    """The cases torch itself runs (it refuses a few, such as subtracting bools), matmuls first."""
    cases = [case for case in op_cases(ops, dtypes) if case.reference() is not None]
    return sorted(cases, key=lambda case: case.op != "matmul")


def tolerance(dtype: str, computes_in: dict[str, str]) -> tuple[float, float]:
    """(rtol, atol) for results stored in `dtype` on a device computing it in `computes_in.get(dtype, dtype)`."""
    return TOLERANCE[computes_in.get(dtype, dtype)]


def compare(case: Case, got: torch.Tensor, computes_in: dict[str, str]) -> str:
    """Why `got` is not the right result of `case` ("" when it is)."""
    want = case.reference()
    if list(got.shape) != case.out_shape or str(got.dtype) != f"torch.{case.dtype}":
        return f"{case}: got a {got.dtype} {list(got.shape)} tensor, expected torch.{case.dtype} {case.out_shape}"
    if case.dtype not in FLOATING:
        return "" if torch.equal(got, want.to(got.dtype)) else f"{case}: got {got.tolist()}, expected {want.tolist()}"
    rtol, atol = tolerance(case.dtype, computes_in)
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    got = got.double()
    if torch.allclose(got, want, rtol=rtol, atol=atol * scale):
        return ""
    err = (got - want).abs().max().item()
    return f"{case}: max abs error {err:.3g} vs torch (tolerance rtol {rtol}, atol {atol} x {scale:.3g})"
