"""Softmax over the last axis, with an optional scale and additive mask, and its backward.

    y = softmax(x * scale + mask)          x (..., T) float32, mask broadcastable to x
    dx = scale * y * (dy - sum(dy * y, axis=-1))
"""
import numpy as np

from . import use_ref


def softmax_forward_ref(x, scale=1.0, mask=None):
    z = x * x.dtype.type(scale) if scale != 1.0 else x
    if mask is not None:
        z = z + mask
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward_ref(y, dy, scale=1.0):
    dx = y * (dy - (dy * y).sum(axis=-1, keepdims=True))
    return dx * dx.dtype.type(scale) if scale != 1.0 else dx


def softmax_forward(x, scale=1.0, mask=None):
    return softmax_forward_ref(x, scale, mask)


def softmax_backward(y, dy, scale=1.0):
    return softmax_backward_ref(y, dy, scale)
