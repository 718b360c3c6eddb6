"""Reductions over one or several axes, with keepdim."""
import numpy as np

from ..function import Function
from . import register


def expand_reduced(grad, shape, axis, keepdims):
    """Broadcast a reduced gradient back to `shape` (re-inserting the reduced axes)."""
    if axis is not None and not keepdims:
        grad = np.expand_dims(grad, axis)
    return np.broadcast_to(grad, shape)


@register
class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return np.asarray(x.sum(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        return expand_reduced(grad, ctx.shape, ctx.axis, ctx.keepdims)
