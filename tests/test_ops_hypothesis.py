"""Property tests: for any broadcastable pair of shapes, any reduction axes and keepdim, the
binary ops and reductions give gradients of their inputs' shapes that match central
differences. Shapes stay small and examples few, so the file runs in seconds."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import minigrad as mg
import minigrad.functional as F
from minigrad.testing import gradcheck

BINARY = {
    "add": F.add, "sub": F.sub, "mul": F.mul, "div": F.div,
    "pow": F.pow, "maximum": F.maximum, "minimum": F.minimum,
    "where": lambda a, b: F.where((a.data > 0) if a.ndim >= b.ndim else (b.data > 0), a, b),
}
REDUCE = {
    "sum": F.sum, "mean": F.mean, "max": F.max, "var": F.var,
    "logsumexp": lambda x, dim, keepdim: F.logsumexp(x, dim, keepdim),
}
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _leaf(rng, shape, positive=False):
    data = rng.uniform(0.5, 2.0, shape) if positive else rng.standard_normal(shape)
    return mg.tensor(data, requires_grad=True, dtype=np.float64)


@SETTINGS
@given(name=st.sampled_from(sorted(BINARY)),
       shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3),
       seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_gradients(name, shapes, seed):
    rng = np.random.default_rng(seed)
    a_shape, b_shape = shapes.input_shapes
    # positive operands keep div and pow smooth; maximum/minimum ties have measure zero
    a = _leaf(rng, a_shape, positive=name in ("div", "pow"))
    b = _leaf(rng, b_shape, positive=name == "div")
    out = BINARY[name](a, b)
    assert out.shape == shapes.result_shape
    assert gradcheck(BINARY[name], [a, b])
    assert a.grad.shape == a_shape and b.grad.shape == b_shape


@st.composite
def shape_and_dims(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=3, max_side=4))
    dims = draw(st.none() | st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1,
                                     max_size=len(shape), unique_by=lambda d: d % len(shape)))
    return shape, (dims if dims is None or len(dims) > 1 else dims[0])


@SETTINGS
@given(name=st.sampled_from(sorted(REDUCE)), case=shape_and_dims(), keepdim=st.booleans(),
       seed=st.integers(0, 2**16))
def test_reductions_gradients(name, case, keepdim, seed):
    shape, dims = case
    x = _leaf(np.random.default_rng(seed), shape)
    fn = lambda t: REDUCE[name](t, dims, keepdim)  # noqa: E731
    out = fn(x)
    axes = None if dims is None else ((dims,) if isinstance(dims, int) else dims)
    expected = np.sum(x.data, axis=None if axes is None else tuple(axes), keepdims=keepdim).shape
    assert out.shape == expected
    if name == "var" and x.size == out.size:  # one element per variance: NaN, and so its gradient
        out.backward(np.ones(out.shape))
        assert np.isnan(out.data).all() and np.isnan(x.grad).all()  # as torch; nothing to gradcheck
    else:
        assert gradcheck(fn, [x])
    assert x.grad.shape == x.shape
