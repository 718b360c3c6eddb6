"""GELU, exact erf form (the one BERT uses), forward and backward.

    y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
    dy/dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
"""
import math

import numpy as np
from numba import njit, prange

from . import use_ref
from .fastmath import fast_erf, fast_exp

_erf = np.vectorize(math.erf, otypes=[np.float64])


def erf_ref(x):
    """erf elementwise, exact to float64 (NumPy has no erf ufunc, so math.erf per element: the
    reference is the definition, not a fast path). float64 gradient checks need it exact: an
    approximate erf in the forward would disagree with the exact derivative in the backward."""
    return _erf(x)


def gelu_forward_ref(x):
    return (0.5 * x * (1.0 + erf_ref(x / math.sqrt(2.0)))).astype(x.dtype)


def gelu_backward_ref(x, dy):
    cdf = 0.5 * (1.0 + erf_ref(x / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (dy * (cdf + x * pdf)).astype(x.dtype)


_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
_INV_SQRT_2PI = np.float32(1.0 / math.sqrt(2.0 * math.pi))


@njit(fastmath=True, parallel=True, cache=True)
def gelu_forward_kernel(x, y):
    """x (n,) float32 -> y (n,):  for i in prange(n): y[i] = 0.5 x (1 + erf(x / sqrt 2)).

    One read, one write; erf and its exp are inline polynomials, so the loop vectorises.
    """
    for i in prange(x.shape[0]):
        xi = x[i]
        y[i] = np.float32(0.5) * xi * (np.float32(1.0) + fast_erf(xi * _INV_SQRT2))


@njit(fastmath=True, parallel=True, cache=True)
def gelu_backward_kernel(x, dy, dx):
    """x, dy (n,) float32 -> dx (n,):  dx[i] = dy (Phi(x) + x phi(x)), cdf and pdf in one go."""
    for i in prange(x.shape[0]):
        xi = x[i]
        cdf = np.float32(0.5) * (np.float32(1.0) + fast_erf(xi * _INV_SQRT2))
        pdf = fast_exp(np.float32(-0.5) * xi * xi) * _INV_SQRT_2PI
        dx[i] = dy[i] * (cdf + xi * pdf)


def gelu_forward(x):
    """x (...) -> y (...), x's dtype; float32 runs the kernel, other dtypes the reference."""
    if use_ref() or x.dtype != np.float32:
        return gelu_forward_ref(x)
    x1 = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(x1)
    gelu_forward_kernel(x1, y)
    return y.reshape(x.shape)


def gelu_backward(x, dy):
    """x, dy (...) -> dx (...); float32 runs the kernel, other dtypes the reference."""
    if use_ref() or x.dtype != np.float32 or dy.dtype != np.float32:
        return gelu_backward_ref(x, dy)
    if x.shape != dy.shape:
        raise ValueError(f"gelu_backward: x {x.shape} and dy {dy.shape} differ")
    x1 = np.ascontiguousarray(x).reshape(-1)
    dx = np.empty_like(x1)
    gelu_backward_kernel(x1, np.ascontiguousarray(dy).reshape(-1), dx)
    return dx.reshape(x.shape)
