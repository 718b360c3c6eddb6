"""Matrix multiply: the naive reference, the Numba kernel, and the dispatcher; plus the
linear layer's fused bias (+ GELU) epilogue.

    matmul(a (M, K), b (K, N)) -> (M, N); batched (..., M, K) @ (..., K, N)
    linear(x (N, Cin), w (Cout, Cin), b (Cout,) | None, gelu) -> y = act(x @ w^T + b)
"""
import numpy as np
from numba import njit, prange

from . import use_ref
from .fastmath import fast_erf
from .gelu import gelu_forward_ref

# Tile sizes of the Numba matmul, chosen by measurement on the 2-core Zen 5 (benchmarks/):
# a thread owns MB rows of C; a (KC, NC) panel of B (512 KB) stays in its 1 MB L2 while the
# micro-kernel sweeps 8 rows of C (16 KB) through L1.
MB, KC, NC = 64, 256, 512


def matmul_ref(a, b):
    """The definition: out[i, j] = sum_k a[i, k] * b[k, j] (einsum, no BLAS tricks)."""
    return np.einsum("...ik,...kj->...ij", a, b)


@njit(fastmath=True, cache=True)
def _matmul_rows(a, b, c, i0, i1, bias, gelu):
    """c[i0:i1] = a[i0:i1] @ b (+ bias, then GELU if gelu), serial; a (M, K), b (K, N).

    for j0 in N by NC:                        column panel
      for k0 in K by KC:                      B[k0:k0+KC, j0:j0+NC] stays in L2
        for i in i0..i1 by 8:                 8 rows of C stay in L1
          for k in k0..k0+KC by 4:            32 scalars of A held in registers
            for j in panel:                   vectorised: 4 loads of B, 8 FMAs chains into C
              c[i+r, j] += a[i+r, k] b[k, j] + ... + a[i+r, k+3] b[k+3, j]   (r = 0..7)
      epilogue on the finished panel: c = gelu(c + bias)   (still in cache)

    Slicing rows of B and C (`b[k, j0:j1]`) rather than indexing `b[k, j]` is what lets LLVM
    prove unit stride and vectorise the j loop. Rows past the last multiple of 8 and k past the
    last multiple of 4 take a one-row, one-k loop.
    """
    kdim = a.shape[1]
    n = b.shape[1]
    for j0 in range(0, n, NC):
        j1 = min(j0 + NC, n)
        w = j1 - j0
        c[i0:i1, j0:j1] = 0.0
        for k0 in range(0, kdim, KC):
            k1 = min(k0 + KC, kdim)
            k4 = k0 + (k1 - k0) // 4 * 4
            i = i0
            while i + 8 <= i1:
                c0 = c[i, j0:j1]; c1 = c[i + 1, j0:j1]; c2 = c[i + 2, j0:j1]; c3 = c[i + 3, j0:j1]
                c4 = c[i + 4, j0:j1]; c5 = c[i + 5, j0:j1]; c6 = c[i + 6, j0:j1]; c7 = c[i + 7, j0:j1]
                for k in range(k0, k4, 4):
                    b0 = b[k, j0:j1]; b1 = b[k + 1, j0:j1]; b2 = b[k + 2, j0:j1]; b3 = b[k + 3, j0:j1]
                    a00, a01, a02, a03 = a[i, k], a[i, k + 1], a[i, k + 2], a[i, k + 3]
                    a10, a11, a12, a13 = a[i + 1, k], a[i + 1, k + 1], a[i + 1, k + 2], a[i + 1, k + 3]
                    a20, a21, a22, a23 = a[i + 2, k], a[i + 2, k + 1], a[i + 2, k + 2], a[i + 2, k + 3]
                    a30, a31, a32, a33 = a[i + 3, k], a[i + 3, k + 1], a[i + 3, k + 2], a[i + 3, k + 3]
                    a40, a41, a42, a43 = a[i + 4, k], a[i + 4, k + 1], a[i + 4, k + 2], a[i + 4, k + 3]
                    a50, a51, a52, a53 = a[i + 5, k], a[i + 5, k + 1], a[i + 5, k + 2], a[i + 5, k + 3]
                    a60, a61, a62, a63 = a[i + 6, k], a[i + 6, k + 1], a[i + 6, k + 2], a[i + 6, k + 3]
                    a70, a71, a72, a73 = a[i + 7, k], a[i + 7, k + 1], a[i + 7, k + 2], a[i + 7, k + 3]
                    for j in range(w):
                        x0 = b0[j]; x1 = b1[j]; x2 = b2[j]; x3 = b3[j]
                        c0[j] += a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                        c1[j] += a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                        c2[j] += a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                        c3[j] += a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
                        c4[j] += a40 * x0 + a41 * x1 + a42 * x2 + a43 * x3
                        c5[j] += a50 * x0 + a51 * x1 + a52 * x2 + a53 * x3
                        c6[j] += a60 * x0 + a61 * x1 + a62 * x2 + a63 * x3
                        c7[j] += a70 * x0 + a71 * x1 + a72 * x2 + a73 * x3
                for k in range(k4, k1):
                    bk = b[k, j0:j1]
                    for r in range(8):
                        cr = c[i + r, j0:j1]
                        air = a[i + r, k]
                        for j in range(w):
                            cr[j] += air * bk[j]
                i += 8
            while i < i1:
                ci = c[i, j0:j1]
                for k in range(k0, k1):
                    bk = b[k, j0:j1]
                    aik = a[i, k]
                    for j in range(w):
                        ci[j] += aik * bk[j]
                i += 1
        for i in range(i0, i1):
            ci = c[i, j0:j1]
            bj = bias[j0:j1]
            for j in range(w):
                h = ci[j] + bj[j]
                if gelu:
                    h = np.float32(0.5) * h * (np.float32(1.0) + fast_erf(h * np.float32(0.7071067811865476)))
                ci[j] = h


@njit(fastmath=True, parallel=True, cache=True)
def matmul_kernel(a, b, bias, gelu, c):
    """a (M, K) @ b (K, N) + bias (N,) [GELU] -> c (M, N) float32: row blocks of MB over
    threads (prange), each a `_matmul_rows` call."""
    m = a.shape[0]
    for ib in prange((m + MB - 1) // MB):
        _matmul_rows(a, b, c, ib * MB, min(ib * MB + MB, m), bias, gelu)


@njit(fastmath=True, parallel=True, cache=True)
def bmm_kernel(a, b, c):
    """a (G, M, K) @ b (G, K, N) -> c (G, M, N) float32, for attention's (B*H, T, D) shapes:
    one whole small matmul per prange iteration, since one head is too small to split."""
    zero = np.zeros(b.shape[2], np.float32)
    for g in prange(a.shape[0]):
        _matmul_rows(a[g], b[g], c[g], 0, a.shape[1], zero, False)


def _check(a, b, name):
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{name}: {a.shape} @ {b.shape}: inner dimensions "
                         f"{a.shape[-1] if a.ndim else None} and "
                         f"{b.shape[-2] if b.ndim > 1 else None} differ")


def matmul_numba(a, b):
    """The hand-written kernel, float32: (M, K) @ (K, N), or batched (G, M, K) @ (G, K, N)."""
    _check(a, b, "matmul_numba")
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise TypeError(f"matmul_numba: float32 only, got {a.dtype} @ {b.dtype}")
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.ndim == 2 and b.ndim == 2:
        c = np.empty((a.shape[0], b.shape[1]), np.float32)
        matmul_kernel(a, b, np.zeros(b.shape[1], np.float32), False, c)
        return c
    if a.ndim == 3 and b.shape == (a.shape[0], a.shape[2], b.shape[2]):
        c = np.empty((a.shape[0], a.shape[1], b.shape[2]), np.float32)
        bmm_kernel(a, b, c)
        return c
    raise ValueError(f"matmul_numba: {a.shape} @ {b.shape}: expected 2-D @ 2-D or (G, M, K) @ "
                     "(G, K, N)")


def matmul(a, b):
    """a (..., M, K) @ b (..., K, N) -> (..., M, N): the dispatcher the ops call.

    Measured (benchmarks/RESULTS.md, "Kernels"): OpenBLAS beats `matmul_numba` at every shape
    class we use, the BERT projections, the square ones and the batched attention ones, so
    every shape goes to BLAS; `matmul_numba` stays tested and benchmarked as the readable
    fast version. Under `kernels.use("ref")` this runs `matmul_ref`.
    """
    _check(a, b, "matmul")
    if use_ref():
        return matmul_ref(a, b)
    return np.matmul(a, b)


def linear_forward_ref(x, w, b=None, gelu=False):
    """Returns (y, h): h is the pre-activation x @ w^T + b kept for GELU's backward (or None)."""
    h = x @ w.T
    if b is not None:
        h = h + b
    return (gelu_forward_ref(h), h) if gelu else (h, None)


@njit(fastmath=True, parallel=True, cache=True)
def bias_gelu_kernel(h, bias, y):
    """h (N, C) += bias (C,) in place; y = GELU(h): one pass over the matmul's output,
    for n in prange(N): for c in range(C)."""
    for n in prange(h.shape[0]):
        for j in range(h.shape[1]):
            hj = h[n, j] + bias[j]
            h[n, j] = hj
            y[n, j] = np.float32(0.5) * hj * (np.float32(1.0) + fast_erf(hj * np.float32(0.7071067811865476)))


def linear_forward(x, w, b=None, gelu=False):
    """x (..., Cin), w (Cout, Cin), b (Cout,) | None -> (y (..., Cout), h or None).

    The matmul goes to BLAS (see `matmul`), and the bias and GELU run as one fused epilogue pass
    over its output. (`matmul_kernel` fuses the same epilogue into its tiles; it is the slower
    matmul, so it is not the one dispatched.) float64 takes the reference."""
    if x.shape[-1] != w.shape[1] or (b is not None and b.shape != (w.shape[0],)):
        raise ValueError(f"linear: x {x.shape} @ w{w.shape}^T + b {None if b is None else b.shape}:"
                         f" expected w (Cout, {x.shape[-1]}) and b (Cout,)")
    if use_ref() or x.dtype != np.float32 or w.dtype != np.float32 or (
            b is not None and b.dtype != np.float32):
        return linear_forward_ref(x, w, b, gelu)
    h = np.matmul(x, w.T)
    if not gelu:
        if b is not None:
            h += b
        return h, None
    h2 = h.reshape(-1, h.shape[-1])
    y = np.empty_like(h2)
    bias_gelu_kernel(h2, np.zeros(h.shape[-1], np.float32) if b is None else np.ascontiguousarray(b), y)
    return y.reshape(h.shape), h
