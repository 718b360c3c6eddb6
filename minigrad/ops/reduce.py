"""Reductions over one or several axes, with keepdims: sum, mean, max, logsumexp.

`axis` arrives normalised by `minigrad.functional` (None, or a tuple of non-negative ints), so
each backward only has to re-insert the reduced axes and broadcast. `var` is composed from
these in functional.py.
"""
import numpy as np

from ..function import Function
from . import register


def expand_reduced(grad, shape, axis, keepdims):
    """Broadcast a reduced gradient back to `shape` (re-inserting the reduced axes)."""
    if axis is not None and not keepdims:
        grad = np.expand_dims(grad, axis)
    return np.broadcast_to(grad, shape)


def reduced_size(shape, axis):
    """How many elements each result of a reduction over `axis` (None: all) is made of."""
    axes = range(len(shape)) if axis is None else np.atleast_1d(axis)
    return int(np.prod([shape[a] for a in axes]))


@register
class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return np.asarray(x.sum(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        return expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)


@register
class Mean(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        # from the reduced axes: x.size // out.size would be 0 / 0 for an empty x
        ctx.count = reduced_size(x.shape, axis)
        return np.asarray(x.mean(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        dx = expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)
        return dx / grad.dtype.type(ctx.count)  # count 0: x and dx are empty


@register
class Max(Function):
    """Max over axes. Ties share the gradient evenly (as torch.amax), so the gradient is the
    same whichever tied element NumPy would pick."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        out = np.asarray(x.max(axis=axis, keepdims=keepdims))
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        is_max = x == expand_reduced(out, x.shape, axis, keepdims)
        ctx.save_for_backward(is_max, is_max.sum(axis=axis, keepdims=True))
        return out

    @staticmethod
    def backward(ctx, grad):
        is_max, count = ctx.saved
        dx = expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)
        return (dx * is_max / count).astype(grad.dtype)


@register
class LogSumExp(Function):
    """log(sum(exp(x))) over axes, shifted by the max so exp never overflows.
    Backward: dx = grad * softmax(x) over the same axes."""

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        m = x.max(axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)  # a row of -inf stays -inf instead of nan
        e = np.exp(x - m)
        s = e.sum(axis=axis, keepdims=True)
        out = np.log(s) + m
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        ctx.save_for_backward(e / s)
        return out if keepdims else np.asarray(np.squeeze(out, axis=axis))

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved
        return expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims) * probs
