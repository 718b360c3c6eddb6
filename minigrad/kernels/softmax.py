"""Softmax over the last axis, with an optional scale and additive mask, and its backward;
and the same with dropout on the output (attention's probabilities).

    y = softmax(x * scale + mask)          x (..., T) float32, mask broadcastable to x
    dx = scale * y * (dy - sum(dy * y, axis=-1))
    with dropout (p, seed): also yd = dropout(y, p, seed); the backward takes dyd, the gradient
    of yd, and first forms dy = dropout(dyd, p, seed) (dropout.py: the same mask, recomputed)
"""
import numpy as np
from numba import njit, prange

from . import dropout as kdropout
from . import use_ref
from .dropout import dropped, random_bits
from .fastmath import NAN_SAFE, fast_exp, fast_max


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


@njit(inline="always", fastmath=NAN_SAFE, cache=True)
def softmax_row(x, scale, mrow, y, seed, base, thresh, keep_scale, yd):
    """One row: y = softmax(x * scale + mrow), and when thresh > 0, yd = dropout(y) with element
    j drawing the dropout bits of flat index base + j. x may be y's own memory (in place).

    y = z = x * scale + mrow; m = max(z)              pass 1
    y = fast_exp(y - m); s = sum(y)                   pass 2
    y /= s; yd = y * keep_scale where kept, else 0    pass 3 (the row is still in L1)

    z is stored, not recomputed in pass 2: recomputed, fast-math may regroup x * scale + mrow
    - m as x * scale + (mrow - m), and for a row masked everywhere with float32's most negative
    number (additive_mask's) mrow - m is 0, so the row came out as softmax(x * scale) where the
    reference and torch give the uniform row.
    """
    t = x.shape[0]
    m = np.float32(-np.inf)
    for j in range(t):
        z = x[j] * scale + mrow[j]
        y[j] = z
        m = fast_max(m, z)
    s = np.float32(0.0)
    for j in range(t):
        e = fast_exp(y[j] - m)
        y[j] = e
        s += e
    inv = np.float32(1.0) / s
    for j in range(t):
        y[j] *= inv
    if thresh > 0:
        for j in range(t):
            yd[j] = dropped(y[j], seed, base + j, thresh, keep_scale)


@njit(inline="always", fastmath=NAN_SAFE, cache=True)
def softmax_backward_row(y, dy, scale, dx, seed, base, thresh, keep_scale, yd):
    """One row of the backward: dx = scale * y * (g - sum(g * y)), where g = dy, or when
    thresh > 0, g = dropout(dy) (dy is then the gradient of dropout(y)) and yd = dropout(y)
    too when yd has the row's length (attention's dV needs it; the bits are drawn once).

    g = dropout(dy); d = sum_j g[j] * y[j]; dx = g      pass 1 (yd = dropout(y))
    dx = scale * y * (dx - d)                            pass 2 (in L1)
    """
    t = y.shape[0]
    drop = thresh > 0
    write_yd = drop and yd.shape[0] == t
    d = np.float32(0.0)
    for j in range(t):
        g = dy[j]
        if drop:
            kept = random_bits(seed, base + j) >= thresh
            g = g * keep_scale if kept else np.float32(0.0)
            if write_yd:
                yd[j] = y[j] * keep_scale if kept else np.float32(0.0)
        dx[j] = g
        d += g * y[j]
    for j in range(t):
        dx[j] = scale * y[j] * (dx[j] - d)


@njit(fastmath=NAN_SAFE, parallel=True, cache=True)
def softmax_forward_kernel(x, scale, mask, mask_rows, y, seed, thresh, keep_scale, yd):
    """x (R, T) float32, mask (Rm, T) with row r using mask[r // mask_rows] -> y (R, T), and
    when thresh > 0 (dropout) yd (R, T) = dropout(y); yd may be x's own buffer.

    for r in prange(R):                     one row per iteration, rows split over threads
        softmax_row(x[r], mask[r // mask_rows] -> y[r], yd[r])    three passes over the row

    Fuses the scale, the additive mask, the max, the exponent, the normalisation and dropout: x
    is read twice from L1 and y (and yd) written once, where the reference makes five full-size
    temporaries. A mask that repeats over rows (BERT's (B, 1, 1, T) over (B, H, T, T)) is
    indexed, never broadcast into memory. Element (r, j) draws the dropout bits of flat index
    r * T + j, so the mask is the one `dropout.dropout` draws for the whole array.
    """
    rows, t = x.shape
    for r in prange(rows):
        ydr = yd[r] if thresh > 0 else yd[0]
        softmax_row(x[r], scale, mask[r // mask_rows], y[r], seed, r * t, thresh, keep_scale, ydr)


@njit(fastmath=NAN_SAFE, parallel=True, cache=True)
def softmax_backward_kernel(y, dy, scale, dx, seed, thresh, keep_scale):
    """y, dy (R, T) float32 -> dx (R, T); when thresh > 0, dy is the gradient of dropout(y) and
    goes through the same dropout mask first.

    for r in prange(R):
        softmax_backward_row(y[r], dy[r] -> dx[r])      two passes, the second in L1

    One read of y and dy and one write, no temporaries.
    """
    rows, t = y.shape
    no_yd = np.empty(0, np.float32)
    for r in prange(rows):
        softmax_backward_row(y[r], dy[r], scale, dx[r], seed, r * t, thresh, keep_scale, no_yd)


def _rows_of_mask(mask, shape):
    """The mask as (Rm, T) rows plus how many consecutive x rows share one mask row, when the
    mask varies only over leading axes (e.g. (B, 1, 1, T) for x (B, H, T, T)); else the mask
    broadcast to x's shape (then every x row has its own mask row)."""
    t = shape[-1]
    m = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
    # trailing axes (before the last) over which the mask is constant
    inner = 1
    ax = len(shape) - 2
    while ax >= 0 and m.shape[ax] == 1:
        inner *= shape[ax]
        ax -= 1
    if all(m.shape[a] == shape[a] for a in range(ax + 1)) and m.shape[-1] == t:
        return np.ascontiguousarray(m).reshape(-1, t), inner
    return np.ascontiguousarray(np.broadcast_to(m, shape)).reshape(-1, t), 1


def _check_mask(x, mask):
    if mask is not None and np.broadcast_shapes(mask.shape, x.shape) != x.shape:
        raise ValueError(f"softmax: mask {mask.shape} does not broadcast to x {x.shape}")


def _forward(x, scale, mask, p, seed, yd):
    """The kernel call behind both forwards: x (..., T) float32 -> y (and yd filled if p > 0)."""
    t = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, t)
    if mask is None:
        mask2, mask_rows = np.zeros((1, t), np.float32), x2.shape[0]
    else:
        mask2, mask_rows = _rows_of_mask(mask.astype(np.float32, copy=False), x.shape)
    y = np.empty_like(x2)
    softmax_forward_kernel(x2, np.float32(scale), mask2, mask_rows, y, np.uint64(seed),
                           kdropout.threshold(p), np.float32(kdropout.keep_scale(p)), yd)
    return y.reshape(x.shape)


def softmax_forward(x, scale=1.0, mask=None):
    """x (..., T), mask None or additive, broadcastable to x -> y (..., T), x's dtype.

    float32 runs the kernel; any other dtype (float64 in gradient checks) runs the reference,
    because the kernel's `fast_exp` is a float32 approximation."""
    if use_ref() or x.dtype != np.float32 or x.size == 0:
        return softmax_forward_ref(x, scale, mask)
    _check_mask(x, mask)
    return _forward(x, scale, mask, 0.0, 0, np.empty((1, 1), np.float32))


def softmax_dropout_forward(x, scale, mask, p, seed, out=None):
    """-> (y, yd): y as `softmax_forward`, yd = dropout(y, p, seed), written into `out` when
    given (a contiguous array of x's shape, which may be x itself)."""
    if use_ref() or x.dtype != np.float32 or x.size == 0:
        y = softmax_forward_ref(x, scale, mask)
        return y, kdropout.dropout(y, p, seed, out)
    _check_mask(x, mask)
    yd = np.empty_like(x) if out is None else out
    y = _forward(x, scale, mask, p, seed, yd.reshape(-1, x.shape[-1]))
    if p == 0.0:  # the kernel writes yd only when it drops something
        yd[...] = y
    return y, yd


def softmax_backward(y, dy, scale=1.0, p=0.0, seed=0):
    """y, dy (..., T) -> dx (..., T); with p > 0, dy is the gradient of dropout(y, p, seed).
    float32 runs the kernel, other dtypes the reference."""
    if use_ref() or y.dtype != np.float32 or dy.dtype != np.float32 or y.size == 0:
        return softmax_backward_ref(y, dy if p == 0.0 else kdropout.dropout(dy, p, seed), scale)
    if y.shape != dy.shape:
        raise ValueError(f"softmax_backward: y {y.shape} and dy {dy.shape} differ")
    t = y.shape[-1]
    y2 = np.ascontiguousarray(y).reshape(-1, t)
    dx = np.empty_like(y2)
    softmax_backward_kernel(y2, np.ascontiguousarray(dy).reshape(-1, t), np.float32(scale), dx,
                            np.uint64(seed), kdropout.threshold(p), np.float32(kdropout.keep_scale(p)))
    return dx.reshape(y.shape)
