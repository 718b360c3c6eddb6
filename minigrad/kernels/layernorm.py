"""Layer normalisation over the last axis, forward and backward, one pass per row each; and
the same with dropout and a residual add in front (BERT's sublayer output).

    x (N, C), gamma (C,), beta (C,)
    mean = x.mean(-1); rstd = 1 / sqrt(var(x) + eps); xhat = (x - mean) * rstd
    y = xhat * gamma + beta                      -> (y (N, C), mean (N,), rstd (N,))
    backward: dbeta = sum dy; dgamma = sum dy * xhat;
              dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * gamma

    dropout + residual + layer norm: x, residual (N, C), p, seed
    s = dropout(x, p, seed) + residual; y = layer_norm(s)    -> (y, s, mean, rstd)
    backward: ds = layer_norm's dx (with s for x); dresidual = ds; dx = dropout(ds, p, seed)
    (dropout.py's mask, recomputed from the seed; p = 0: no dropout)
"""
import numba
import numpy as np
from numba import njit, prange

from . import dropout as kdropout
from . import use_ref
from .dropout import dropout_ref, dropped


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


def dropout_add_layer_norm_forward_ref(x, residual, gamma, beta, p, seed, eps):
    s = (x if p == 0.0 else dropout_ref(x, p, seed)) + residual
    y, mean, rstd = layer_norm_forward_ref(s, gamma, beta, eps)
    return y, s, mean, rstd


def dropout_add_layer_norm_backward_ref(dy, s, gamma, mean, rstd, p, seed):
    ds, dgamma, dbeta = layer_norm_backward_ref(dy, s, gamma, mean, rstd)
    return (ds if p == 0.0 else dropout_ref(ds, p, seed)), ds, dgamma, dbeta


@njit(inline="always", fastmath=True, cache=True)
def layer_norm_row(x, gamma, beta, eps, y):
    """One row: y = (x - mu) * rstd * gamma + beta; returns (mu, rstd).

    mu = sum(x) / C; var = sum((x - mu)^2) / C     two sweeps over the row in L1
    y = (x - mu) * rstd * gamma + beta              one write
    """
    c = x.shape[0]
    inv_c = np.float32(1.0 / c)
    s = np.float32(0.0)
    for j in range(c):
        s += x[j]
    mu = s * inv_c
    v = np.float32(0.0)
    for j in range(c):
        d = x[j] - mu
        v += d * d
    r = np.float32(1.0) / np.sqrt(v * inv_c + eps)
    for j in range(c):
        y[j] = (x[j] - mu) * r * gamma[j] + beta[j]
    return mu, r


@njit(inline="always", fastmath=True, cache=True)
def layer_norm_backward_row(dy, x, gamma, mu, r, dx, dg, db):
    """One row of the backward: dx = r * (g - a - xhat * b), and dy * xhat, dy added to the
    column sums dg, db.

    xhat = (x - mu) * r; g = dy * gamma; a = mean(g); b = mean(g * xhat)     sweep 1
    dx = r * (g - a - xhat * b)                                               sweep 2 (in L1)
    """
    c = x.shape[0]
    inv_c = np.float32(1.0 / c)
    a = np.float32(0.0)
    b = np.float32(0.0)
    for j in range(c):
        xhat = (x[j] - mu) * r
        g = dy[j] * gamma[j]
        a += g
        b += g * xhat
        dg[j] += dy[j] * xhat
        db[j] += dy[j]
    a *= inv_c
    b *= inv_c
    for j in range(c):
        xhat = (x[j] - mu) * r
        dx[j] = r * (dy[j] * gamma[j] - a - xhat * b)


@njit(fastmath=True, parallel=True, cache=True)
def layer_norm_forward_kernel(x, gamma, beta, eps, y, mean, rstd):
    """x (N, C) float32 -> y (N, C), mean (N,), rstd (N,).

    for n in prange(N):
        layer_norm_row(x[n] -> y[n], mean[n], rstd[n])
            mu = sum(x[n]) / C; var = sum((x[n] - mu)^2) / C     two sweeps over a row in L1
            y[n] = (x[n] - mu) * rstd * gamma + beta              one write

    Fuses centring, variance, normalisation and the affine map: x is read from memory once
    and y written once, where the reference allocates four (N, C) temporaries.
    """
    for n in prange(x.shape[0]):
        mean[n], rstd[n] = layer_norm_row(x[n], gamma, beta, eps, y[n])


@njit(fastmath=True, parallel=True, cache=True)
def layer_norm_backward_kernel(dy, x, gamma, mean, rstd, n_chunks, dx, dgamma_part, dbeta_part):
    """dy, x (N, C), gamma (C,), mean, rstd (N,) -> dx (N, C); per-chunk partial sums
    dgamma_part, dbeta_part (n_chunks, C), which the wrapper adds up.

    for chunk in prange(n_chunks):          rows split in contiguous chunks, one per thread
        for n in chunk:                     layer_norm_backward_row:
            xhat = (x[n] - mean) * rstd; g = dy[n] * gamma
            a = mean(g); b = mean(g * xhat)                      sweep 1
            dx[n] = rstd * (g - a - xhat * b)                    sweep 2
            dgamma_part[chunk] += dy[n] * xhat; dbeta_part[chunk] += dy[n]

    One pass over the rows: dx, dgamma and dbeta come from the same reads of dy and x.
    The column sums go to per-chunk rows so that threads never write the same memory.
    """
    n_rows = x.shape[0]
    per = (n_rows + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        dg, db = dgamma_part[ch], dbeta_part[ch]
        for n in range(ch * per, min((ch + 1) * per, n_rows)):
            layer_norm_backward_row(dy[n], x[n], gamma, mean[n], rstd[n], dx[n], dg, db)


@njit(fastmath=True, parallel=True, cache=True)
def dropout_add_layer_norm_forward_kernel(x, residual, gamma, beta, eps, drop, seed, thresh,
                                          keep_scale, y, s, mean, rstd):
    """x, residual (N, C) float32, gamma, beta (C,) -> y, s (N, C), mean, rstd (N,).

    for n in prange(N):
        s[n] = dropout(x[n]) + residual[n]            one sweep (dropout only when drop)
        layer_norm_row(s[n] -> y[n], mean, rstd)      three sweeps over s[n], still in L1

    Fuses dropout, the residual add and layer norm: four (N, C) arrays cross memory (x and
    residual read, s and y written) where the three ops move seven (dropout 2, add 3, layer
    norm 2). s is what layer norm's backward needs, as x is to the plain kernel. Element
    (n, j) draws the dropout bits of flat index n * C + j, so the mask is the one
    `dropout.dropout` draws for x.
    """
    n_rows, c = x.shape
    for n in prange(n_rows):
        xr, rr, sr = x[n], residual[n], s[n]
        if drop:
            base = n * c
            for j in range(c):
                sr[j] = dropped(xr[j], seed, base + j, thresh, keep_scale) + rr[j]
        else:
            for j in range(c):
                sr[j] = xr[j] + rr[j]
        mean[n], rstd[n] = layer_norm_row(sr, gamma, beta, eps, y[n])


@njit(fastmath=True, parallel=True, cache=True)
def dropout_add_layer_norm_backward_kernel(dy, s, gamma, mean, rstd, drop, seed, thresh,
                                           keep_scale, n_chunks, dx, ds, dgamma_part, dbeta_part):
    """dy, s (N, C), gamma (C,), mean, rstd (N,) -> ds (N, C) (= dresidual), and when drop,
    dx (N, C) = dropout(ds); per-chunk partial sums dgamma_part, dbeta_part (n_chunks, C).

    for chunk in prange(n_chunks):          as layer_norm_backward_kernel
        for n in chunk:
            layer_norm_backward_row(dy[n], s[n] -> ds[n], dgamma_part[chunk], dbeta_part[chunk])
            dx[n] = dropout(ds[n])                              one more sweep, ds[n] in L1

    One pass over the rows gives every gradient of the three ops: ds is both the residual's
    gradient and, through the recomputed mask, x's. Four (N, C) arrays cross memory (dy and s
    read, ds and dx written) where layer norm's and dropout's backwards move five.
    """
    n_rows, c = s.shape
    per = (n_rows + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        dg, db = dgamma_part[ch], dbeta_part[ch]
        for n in range(ch * per, min((ch + 1) * per, n_rows)):
            dsr = ds[n]
            layer_norm_backward_row(dy[n], s[n], gamma, mean[n], rstd[n], dsr, dg, db)
            if drop:
                dxr = dx[n]
                base = n * c
                for j in range(c):
                    dxr[j] = dropped(dsr[j], seed, base + j, thresh, keep_scale)


def _f32(*arrays):
    return all(a.dtype == np.float32 for a in arrays)


def _check_affine(op, x, gamma, beta):
    c = x.shape[-1]
    if gamma.shape != (c,) or beta.shape != (c,):
        raise ValueError(f"{op}: x {x.shape} needs gamma and beta ({c},), "
                         f"got {gamma.shape} and {beta.shape}")


def layer_norm_forward(x, gamma, beta, eps):
    """x (..., C), gamma, beta (C,) -> y (..., C), mean (N,), rstd (N,) with N the leading size.

    float32 runs the kernel; other dtypes (float64 in gradient checks) the reference."""
    c = x.shape[-1]
    _check_affine("layer_norm", x, gamma, beta)
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


def _check_dropout_add(x, residual, gamma, beta, p):
    if residual.shape != x.shape:
        raise ValueError(f"dropout_add_layer_norm: x {x.shape} and residual {residual.shape} differ")
    _check_affine("dropout_add_layer_norm", x, gamma, beta)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_add_layer_norm: p={p} is not a probability")


def dropout_add_layer_norm_forward(x, residual, gamma, beta, p, seed, eps):
    """x, residual (..., C), gamma, beta (C,) -> y (..., C), s (..., C), mean (N,), rstd (N,):
    s = dropout(x, p, seed) + residual (no dropout when p = 0), y = layer_norm(s) * gamma + beta.

    float32 runs the kernel; other dtypes (float64 in gradient checks) the reference, which
    draws the identical mask."""
    _check_dropout_add(x, residual, gamma, beta, p)
    c = x.shape[-1]
    x2, r2 = x.reshape(-1, c), residual.reshape(-1, c)
    if use_ref() or not _f32(x, residual, gamma, beta) or x.size == 0:
        y, s, mean, rstd = dropout_add_layer_norm_forward_ref(x2, r2, gamma, beta, p, seed, eps)
        return y.reshape(x.shape), s.reshape(x.shape), mean, rstd
    y = np.empty(x2.shape, np.float32)
    s = np.empty(x2.shape, np.float32)
    mean = np.empty(x2.shape[0], np.float32)
    rstd = np.empty(x2.shape[0], np.float32)
    dropout_add_layer_norm_forward_kernel(
        np.ascontiguousarray(x2), np.ascontiguousarray(r2), np.ascontiguousarray(gamma),
        np.ascontiguousarray(beta), np.float32(eps), p > 0.0, np.uint64(seed),
        kdropout.threshold(p), np.float32(kdropout.keep_scale(p)), y, s, mean, rstd)
    return y.reshape(x.shape), s.reshape(x.shape), mean, rstd


def dropout_add_layer_norm_backward(dy, s, gamma, mean, rstd, p, seed):
    """dy, s (..., C), gamma (C,), mean, rstd (N,) -> dx (..., C), dresidual (..., C), dgamma (C,),
    dbeta (C,), where s, mean, rstd come from the forward with the same p and seed. With p = 0,
    dx is dresidual itself (the same array)."""
    c = s.shape[-1]
    if dy.shape != s.shape:
        raise ValueError(f"dropout_add_layer_norm_backward: dy {dy.shape} and s {s.shape} differ")
    s2, dy2 = s.reshape(-1, c), dy.reshape(-1, c)
    if use_ref() or not _f32(dy, s, gamma, mean, rstd) or s.size == 0:
        dx, ds, dgamma, dbeta = dropout_add_layer_norm_backward_ref(dy2, s2, gamma, mean, rstd, p, seed)
        return dx.reshape(s.shape), ds.reshape(s.shape), dgamma, dbeta
    drop = p > 0.0
    n_chunks = min(s2.shape[0], 4 * numba.get_num_threads())
    ds = np.empty(s2.shape, np.float32)
    dx = np.empty(s2.shape, np.float32) if drop else ds
    dgamma_part = np.zeros((n_chunks, c), np.float32)
    dbeta_part = np.zeros((n_chunks, c), np.float32)
    dropout_add_layer_norm_backward_kernel(
        np.ascontiguousarray(dy2), np.ascontiguousarray(s2), np.ascontiguousarray(gamma),
        np.ascontiguousarray(mean), np.ascontiguousarray(rstd), drop, np.uint64(seed),
        kdropout.threshold(p), np.float32(kdropout.keep_scale(p)), n_chunks, dx, ds,
        dgamma_part, dbeta_part)
    return dx.reshape(s.shape), ds.reshape(s.shape), dgamma_part.sum(axis=0), dbeta_part.sum(axis=0)
