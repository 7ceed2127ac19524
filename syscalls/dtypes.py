"""Tensor element types of the ABI: names and sizes, no torch needed.

The kernel sizes allocations from this table; clients and drivers map the
names to their framework's dtypes.
"""

ITEMSIZE: dict[str, int] = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}

FLOATING = frozenset({"float64", "float32", "float16", "bfloat16"})


def nbytes(shape: list[int] | tuple[int, ...], dtype: str) -> int:
    """Size in bytes of a dense tensor of this shape and dtype."""
    n = ITEMSIZE[dtype]
    for dim in shape:
        n *= dim
    return n
