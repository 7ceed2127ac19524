"""The op set's shape rules agree with what torch does on small tensors."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llmos.drivers import ops as impl
from llmos.syscalls.ops import OPS, OpError, broadcast, infer

dims = st.lists(st.integers(1, 4), min_size=0, max_size=4)


def torch_shape(op, shapes, params):
    tensors = [torch.zeros(s) for s in shapes]
    return tuple(impl.IMPLS[op](*tensors, **params).shape)


@given(op=st.sampled_from(["add", "sub", "mul", "matmul"]), a=dims, b=dims)
def test_binary_ops_match_torch(op, a, b):
    try:
        expected = torch_shape(op, [a, b], {})
    except RuntimeError:
        with pytest.raises(OpError):
            infer(op, [tuple(a), tuple(b)], ["float32", "float32"], {})
        return
    assert infer(op, [tuple(a), tuple(b)], ["float32", "float32"], {})[0] == expected


@given(x=dims.filter(bool), dim=st.integers(-5, 4))
def test_softmax_dim_range_matches_torch(x, dim):
    try:
        expected = torch_shape("softmax", [x], {"dim": dim})
    except (RuntimeError, IndexError):
        with pytest.raises(OpError):
            infer("softmax", [tuple(x)], ["float32"], {"dim": dim})
        return
    assert infer("softmax", [tuple(x)], ["float32"], {"dim": dim})[0] == expected


def test_layer_norm_checks_weight_and_bias():
    assert infer("layer_norm", [(2, 3), (3,), (3,)], ["float32"] * 3, {})[0] == (2, 3)
    with pytest.raises(OpError, match="weight"):
        infer("layer_norm", [(2, 3), (2,)], ["float32"] * 2, {})
    with pytest.raises(OpError, match="eps"):
        infer("layer_norm", [(2, 3)], ["float32"], {"eps": -1.0})


def test_rules_reject_wrong_arity_params_and_dtypes():
    with pytest.raises(OpError, match="takes 2 inputs"):
        infer("add", [(2,)], ["float32"], {})
    with pytest.raises(OpError, match="no parameter"):
        infer("relu", [(2,)], ["float32"], {"dim": 1})
    with pytest.raises(OpError, match="share one dtype"):
        infer("add", [(2,), (2,)], ["float32", "int64"], {})
    with pytest.raises(OpError, match="floating"):
        infer("matmul", [(2, 2), (2, 2)], ["int64", "int64"], {})
    with pytest.raises(OpError, match="unknown op"):
        infer("conv", [(2,)], ["float32"], {})
    with pytest.raises(OpError, match="approximate"):
        infer("gelu", [(2,)], ["float32"], {"approximate": "fast"})


def test_every_op_has_a_torch_implementation():
    assert set(OPS) == set(impl.IMPLS)


def test_broadcast_names_the_clashing_dimension():
    with pytest.raises(OpError, match="dim -1: 3 vs 4"):
        broadcast((2, 3), (4,))
