"""What one op of the ABI op set costs: FLOPs and bytes, and its roofline time.

`llmos.drivers.costmodel` prices whole model steps; a driver runs single ops,
so this module counts them the same way and hands the counts to the shared
roofline (`costmodel.op_time`). Pure Python, no torch, so the simulator may
use it too.

FLOPs: a matmul does 2 * K per result element (a multiply and an add for
each term of the inner dimension K); elementwise ops a fixed number per
result element (`FLOPS_PER_ELEMENT`, counting exp, erf and the like as one).
Bytes: every input is read once and the result written once, at the size the
tensors are stored in (a float32 tensor moves 4 bytes per element even when
the device computes in bfloat16).
"""

from math import prod

from llmos.syscalls.dtypes import nbytes

from ..costmodel import DeviceSpec, op_time

FLOPS_PER_ELEMENT: dict[str, int] = {
    "add": 1,
    "sub": 1,
    "mul": 1,
    "relu": 1,
    "softmax": 5,  # max, subtract, exp, sum, divide
    "layer_norm": 8,  # mean, variance (2), normalise (2), scale and shift (2), rsqrt
    "gelu": 8,  # erf or tanh with its polynomial, and the products around it
}


def op_flops(op: str, input_shapes: list[list[int]], out_shape: list[int]) -> int:
    """Floating-point operations of `op` producing a result of `out_shape`."""
    if op == "matmul":
        return 2 * prod(out_shape) * input_shapes[0][-1]
    return FLOPS_PER_ELEMENT[op] * prod(out_shape)


def op_bytes(input_shapes: list[list[int]], out_shape: list[int], dtype: str) -> int:
    """Memory traffic of one op: every input read once, the result written once."""
    return sum(nbytes(s, dtype) for s in input_shapes) + nbytes(out_shape, dtype)


def op_seconds(spec: DeviceSpec, overhead_s: float, op: str, input_shapes: list[list[int]],
               out_shape: list[int], dtype: str) -> float:
    """Simulated seconds of one op on `spec`: a fixed dispatch overhead plus the roofline time."""
    return overhead_s + op_time(spec, op_flops(op, input_shapes, out_shape), op_bytes(input_shapes, out_shape, dtype))
