"""The compute op set of the ABI, with its shape and dtype rules.

The kernel checks every `compute` call here before it reaches a device: the
inputs' count, shapes and dtypes, and the parameters. From the same rules it
knows the result's shape and dtype, so it can charge the result's memory
before the device runs the op. Drivers implement the ops with the semantics
of the torch functions of the same name; a property test holds the rules to
torch's.
"""

from collections.abc import Callable
from dataclasses import dataclass

from .dtypes import FLOATING

Shape = tuple[int, ...]
Params = dict[str, int | float | str]


class OpError(ValueError):
    """A compute call that breaks the op's rules (kernel answers EINVAL)."""


@dataclass(frozen=True)
class OpSpec:
    """One op: its arity, its parameters with defaults, and its result rule."""

    name: str
    min_inputs: int
    max_inputs: int
    params: dict[str, int | float | str]
    result: Callable[[list[Shape], Params], Shape]
    floating_only: bool = False
    doc: str = ""


def broadcast(a: Shape, b: Shape) -> Shape:
    """The broadcast shape of a and b (NumPy/torch rules), or OpError."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            raise OpError(f"shapes {list(a)} and {list(b)} do not broadcast (dim -{i}: {x} vs {y})")
        out.append(y if x == 1 else x)
    return tuple(reversed(out))


def _elementwise(shapes: list[Shape], params: Params) -> Shape:
    return broadcast(shapes[0], shapes[1])


def _matmul(shapes: list[Shape], params: Params) -> Shape:
    a, b = shapes
    if not a or not b:
        raise OpError("matmul needs inputs of at least one dimension")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise OpError(f"matmul: inner dimensions differ: {list(a)} @ {list(b)}")
    rows = () if len(a) == 1 else (a2[-2],)
    cols = () if len(b) == 1 else (b2[-1],)
    return broadcast(a2[:-2], b2[:-2]) + rows + cols


def _same(shapes: list[Shape], params: Params) -> Shape:
    return shapes[0]


def _softmax(shapes: list[Shape], params: Params) -> Shape:
    x = shapes[0]
    dim = params["dim"]
    if not isinstance(dim, int) or not -max(len(x), 1) <= dim < max(len(x), 1):
        raise OpError(f"softmax: dim {dim!r} is out of range for shape {list(x)}")
    return x


def _layer_norm(shapes: list[Shape], params: Params) -> Shape:
    x = shapes[0]
    eps = params["eps"]
    if not isinstance(eps, (int, float)) or eps <= 0:
        raise OpError(f"layer_norm: eps must be a positive number, not {eps!r}")
    if not x:
        raise OpError("layer_norm needs an input of at least one dimension")
    for name, shape in zip(("weight", "bias"), shapes[1:]):
        if shape != x[-1:]:
            raise OpError(f"layer_norm: {name} has shape {list(shape)}, expected {[x[-1]]}")
    return x


def _gelu(shapes: list[Shape], params: Params) -> Shape:
    if params["approximate"] not in ("none", "tanh"):
        raise OpError(f"gelu: approximate must be 'none' or 'tanh', not {params['approximate']!r}")
    return shapes[0]


OPS: dict[str, OpSpec] = {
    spec.name: spec
    for spec in (
        OpSpec("add", 2, 2, {}, _elementwise, doc="a + b, broadcast"),
        OpSpec("sub", 2, 2, {}, _elementwise, doc="a - b, broadcast"),
        OpSpec("mul", 2, 2, {}, _elementwise, doc="a * b, broadcast"),
        OpSpec("matmul", 2, 2, {}, _matmul, floating_only=True, doc="a @ b (torch.matmul rules)"),
        OpSpec("softmax", 1, 1, {"dim": -1}, _softmax, floating_only=True, doc="softmax over `dim`"),
        OpSpec(
            "layer_norm",
            1,
            3,
            {"eps": 1e-5},
            _layer_norm,
            floating_only=True,
            doc="normalise over the last dimension; optional weight and bias inputs",
        ),
        OpSpec("gelu", 1, 1, {"approximate": "none"}, _gelu, floating_only=True, doc="GELU, exact or tanh"),
        OpSpec("relu", 1, 1, {}, _same, doc="max(x, 0)"),
    )
}


def infer(op: str, shapes: list[Shape], dtypes: list[str], params: Params) -> tuple[Shape, str, Params]:
    """Check a compute call; return the result's shape, dtype and the full params.

    Raises OpError with a message a person can act on when the call is wrong.
    """
    spec = OPS.get(op)
    if spec is None:
        raise OpError(f"unknown op {op!r}; the op set is {sorted(OPS)}")
    if not spec.min_inputs <= len(shapes) <= spec.max_inputs:
        want = spec.min_inputs if spec.min_inputs == spec.max_inputs else f"{spec.min_inputs} to {spec.max_inputs}"
        raise OpError(f"{op} takes {want} inputs, got {len(shapes)}")
    unknown = set(params) - set(spec.params)
    if unknown:
        raise OpError(f"{op} has no parameter {sorted(unknown)}; it takes {sorted(spec.params) or 'none'}")
    if len(set(dtypes)) > 1:
        raise OpError(f"{op}: inputs must share one dtype, got {dtypes}")
    if spec.floating_only and dtypes[0] not in FLOATING:
        raise OpError(f"{op} needs a floating-point dtype, got {dtypes[0]}")
    full = {**spec.params, **params}
    return spec.result(shapes, full), dtypes[0], full
