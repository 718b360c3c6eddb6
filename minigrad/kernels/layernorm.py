"""Layer normalisation over the last axis, forward and backward, one pass per row each.

    x (N, C), gamma (C,), beta (C,)
    mean = x.mean(-1); rstd = 1 / sqrt(var(x) + eps); xhat = (x - mean) * rstd
    y = xhat * gamma + beta                      -> (y (N, C), mean (N,), rstd (N,))
    backward: dbeta = sum dy; dgamma = sum dy * xhat;
              dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * gamma
"""
import numba
import numpy as np
from numba import njit, prange

from . import use_ref


def layer_norm_forward_ref(x, gamma, beta, eps):
    mean = x.mean(axis=-1)
    xc = x - mean[:, None]
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=-1) + x.dtype.type(eps))
    xhat = xc * rstd[:, None]
    return xhat * gamma + beta, mean, rstd.astype(x.dtype)


def layer_norm_backward_ref(dy, x, gamma, mean, rstd):
    xhat = (x - mean[:, None]) * rstd[:, None]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * xhat).sum(axis=0)
    g = dy * gamma
    dx = rstd[:, None] * (g - g.mean(axis=-1, keepdims=True)
                          - xhat * (g * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta


@njit(fastmath=True, parallel=True, cache=True)
def layer_norm_forward_kernel(x, gamma, beta, eps, y, mean, rstd):
    """x (N, C) float32 -> y (N, C), mean (N,), rstd (N,).

    for n in prange(N):
        mu = sum(x[n]) / C; var = sum((x[n] - mu)^2) / C     two sweeps over a row in L1
        y[n] = (x[n] - mu) * rstd * gamma + beta              one write

    Fuses centring, variance, normalisation and the affine map: x is read from memory once
    and y written once, where the reference allocates four (N, C) temporaries.
    """
    n_rows, c = x.shape
    inv_c = np.float32(1.0 / c)
    for n in prange(n_rows):
        s = np.float32(0.0)
        for j in range(c):
            s += x[n, j]
        mu = s * inv_c
        v = np.float32(0.0)
        for j in range(c):
            d = x[n, j] - mu
            v += d * d
        r = np.float32(1.0) / np.sqrt(v * inv_c + eps)
        for j in range(c):
            y[n, j] = (x[n, j] - mu) * r * gamma[j] + beta[j]
        mean[n] = mu
        rstd[n] = r


@njit(fastmath=True, parallel=True, cache=True)
def layer_norm_backward_kernel(dy, x, gamma, mean, rstd, n_chunks, dx, dgamma_part, dbeta_part):
    """dy, x (N, C), gamma (C,), mean, rstd (N,) -> dx (N, C); per-chunk partial sums
    dgamma_part, dbeta_part (n_chunks, C), which the wrapper adds up.

    for chunk in prange(n_chunks):          rows split in contiguous chunks, one per thread
        for n in chunk:
            xhat = (x[n] - mean) * rstd; g = dy[n] * gamma
            a = mean(g); b = mean(g * xhat)                      sweep 1
            dx[n] = rstd * (g - a - xhat * b)                    sweep 2
            dgamma_part[chunk] += dy[n] * xhat; dbeta_part[chunk] += dy[n]

    One pass over the rows: dx, dgamma and dbeta come from the same reads of dy and x.
    The column sums go to per-chunk rows so that threads never write the same memory.
    """
    n_rows, c = x.shape
    inv_c = np.float32(1.0 / c)
    per = (n_rows + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        dg = dgamma_part[ch]
        db = dbeta_part[ch]
        for n in range(ch * per, min((ch + 1) * per, n_rows)):
            mu = mean[n]
            r = rstd[n]
            a = np.float32(0.0)
            b = np.float32(0.0)
            for j in range(c):
                xhat = (x[n, j] - mu) * r
                g = dy[n, j] * gamma[j]
                a += g
                b += g * xhat
                dg[j] += dy[n, j] * xhat
                db[j] += dy[n, j]
            a *= inv_c
            b *= inv_c
            for j in range(c):
                xhat = (x[n, j] - mu) * r
                dx[n, j] = r * (dy[n, j] * gamma[j] - a - xhat * b)


def _f32(*arrays):
    return all(a.dtype == np.float32 for a in arrays)


def layer_norm_forward(x, gamma, beta, eps):
    """x (..., C), gamma, beta (C,) -> y (..., C), mean (N,), rstd (N,) with N the leading size.

    float32 runs the kernel; other dtypes (float64 in gradient checks) the reference."""
    c = x.shape[-1]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(f"layer_norm: x {x.shape} needs gamma and beta ({c},), "
                         f"got {gamma.shape} and {beta.shape}")
    x2 = x.reshape(-1, c)
    if use_ref() or not _f32(x, gamma, beta) or x.size == 0:
        y, mean, rstd = layer_norm_forward_ref(x2, gamma, beta, eps)
        return y.reshape(x.shape), mean, rstd
    x2 = np.ascontiguousarray(x2)
    y = np.empty_like(x2)
    mean = np.empty(x2.shape[0], np.float32)
    rstd = np.empty(x2.shape[0], np.float32)
    layer_norm_forward_kernel(x2, np.ascontiguousarray(gamma), np.ascontiguousarray(beta),
                              np.float32(eps), y, mean, rstd)
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(dy, x, gamma, mean, rstd):
    """dy, x (..., C), gamma (C,), mean, rstd (N,) -> dx (..., C), dgamma (C,), dbeta (C,)."""
    c = x.shape[-1]
    if dy.shape != x.shape:
        raise ValueError(f"layer_norm_backward: dy {dy.shape} and x {x.shape} differ")
    x2, dy2 = x.reshape(-1, c), dy.reshape(-1, c)
    if use_ref() or not _f32(dy, x, gamma, mean, rstd) or x.size == 0:
        dx, dgamma, dbeta = layer_norm_backward_ref(dy2, x2, gamma, mean, rstd)
        return dx.reshape(x.shape), dgamma, dbeta
    n_chunks = min(x2.shape[0], 4 * numba.get_num_threads())
    dx = np.empty(x2.shape, np.float32)
    dgamma_part = np.zeros((n_chunks, c), np.float32)
    dbeta_part = np.zeros((n_chunks, c), np.float32)
    layer_norm_backward_kernel(np.ascontiguousarray(dy2), np.ascontiguousarray(x2),
                               np.ascontiguousarray(gamma), np.ascontiguousarray(mean),
                               np.ascontiguousarray(rstd), n_chunks, dx, dgamma_part, dbeta_part)
    return dx.reshape(x.shape), dgamma_part.sum(axis=0), dbeta_part.sum(axis=0)
