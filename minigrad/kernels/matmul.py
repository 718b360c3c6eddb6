"""Matrix multiply: the naive reference, the Numba kernel, and the dispatcher; plus the
linear layer's fused bias (+ GELU) epilogue.

    matmul(a (M, K), b (K, N)) -> (M, N); batched (..., M, K) @ (..., K, N)
    linear(x (N, Cin), w (Cout, Cin), b (Cout,) | None, gelu) -> y = act(x @ w^T + b)
"""
import numpy as np

from . import use_ref
from .gelu import gelu_forward_ref


def matmul_ref(a, b):
    """The definition: out[i, j] = sum_k a[i, k] * b[k, j] (einsum, no BLAS tricks)."""
    return np.einsum("...ik,...kj->...ij", a, b)


def matmul(a, b):
    return np.matmul(a, b)


def linear_forward_ref(x, w, b=None, gelu=False):
    """Returns (y, h): h is the pre-activation x @ w^T + b kept for GELU's backward (or None)."""
    h = x @ w.T
    if b is not None:
        h = h + b
    return (gelu_forward_ref(h), h) if gelu else (h, None)


def linear_forward(x, w, b=None, gelu=False):
    return linear_forward_ref(x, w, b, gelu)
