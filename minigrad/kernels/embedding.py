"""The backward of an embedding lookup: scatter-add the gradient rows into a (V, C) table.

    dweight = zeros(V, C);  for n in range(N): dweight[ids[n]] += grad[n]

A token seen twice gets both gradients, so rows cannot simply be assigned. NumPy's
`np.add.at` (the reference) does it element by element through a generic ufunc loop: 4.8 ms
for BERT's 2048 x 384 gradient into its 30522-word table. The kernel splits the columns over
the threads (each thread owns a strip of every row, so no two threads add into one element)
and adds each row's strip as one vectorised loop.
"""
import numpy as np
from numba import njit, prange

from . import use_ref

STRIP = 64  # columns a thread owns: a cache line's 16 floats, four times


def embedding_backward_ref(ids, grad, num_rows):
    """ids (N,) integers, grad (N, C) -> dweight (num_rows, C)."""
    dweight = np.zeros((num_rows, grad.shape[1]), grad.dtype)
    np.add.at(dweight, ids, grad)
    return dweight


@njit(fastmath=True, parallel=True, cache=True)
def embedding_backward_kernel(ids, grad, dweight):
    """dweight[ids[n]] += grad[n] for every n, float32, dweight zeroed by the caller.

    for s in prange(strips):          column strips of STRIP over the threads
      for n in range(N):              every row, in order: repeated ids add up
        dweight[ids[n], strip] += grad[n, strip]
    """
    c = grad.shape[1]
    for s in prange((c + STRIP - 1) // STRIP):
        lo, hi = s * STRIP, min(s * STRIP + STRIP, c)
        for n in range(ids.shape[0]):
            row, g = dweight[ids[n]], grad[n]
            for j in range(lo, hi):
                row[j] += g[j]


def embedding_backward(ids, grad, num_rows):
    """ids (...) integers in [0, num_rows), grad (..., C) -> dweight (num_rows, C), grad's dtype;
    float32 runs the kernel, other dtypes the reference."""
    ids = np.asarray(ids).reshape(-1)
    grad2d = grad.reshape(-1, grad.shape[-1])
    if ids.shape[0] != grad2d.shape[0]:
        raise ValueError(f"embedding_backward: {ids.shape[0]} ids for {grad2d.shape[0]} gradient rows")
    if use_ref() or grad.dtype != np.float32:
        return embedding_backward_ref(ids, grad2d, num_rows)
    dweight = np.zeros((num_rows, grad2d.shape[1]), np.float32)
    embedding_backward_kernel(ids.astype(np.int64, copy=False), np.ascontiguousarray(grad2d), dweight)
    return dweight
