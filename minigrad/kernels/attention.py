"""Scaled dot-product attention over all heads, forward and backward, with optional dropout
on the attention probabilities.

    q, k, v (B, H, T, D); mask additive, broadcastable to (B, H, T, T) (BERT: (B, 1, 1, T))
    probs = softmax(q @ k^T * scale + mask)      (B, H, T, T)
    drop = dropout(probs, p, seed)               dropout.py's counter-based mask, p = 0: none
    out = drop @ v                               (B, H, T, D)
    backward: dv = drop^T @ dout; dprobs = dropout(dout @ v^T, p, seed);
              dscores = probs * (dprobs - sum(dprobs * probs, -1)) * scale
              dq = dscores @ k; dk = dscores^T @ q

Two fast paths beside the reference. `attention_forward` (dispatched) runs the four products
in BLAS and the softmax (scale, mask, exp, normalise, dropout) as the fused kernel of
softmax.py. `attention_forward_numba` does everything for one head in one parallel Numba
kernel; it is the textbook fusion, tested and benchmarked, but its T x T x D products are
plain loops and lose to BLAS at BERT's shapes (benchmarks/RESULTS.md), so it is not dispatched.
"""
import numpy as np
from numba import njit, prange

from . import use_ref
from . import dropout as kdropout
from .fastmath import fast_exp
from . import softmax as ksoftmax
from .softmax import softmax_backward_ref, softmax_forward_ref


def _dropped(probs, p, seed):
    """The probabilities after dropout; the mask is recomputed from the seed, never stored."""
    return probs if p == 0.0 else kdropout.dropout(probs, p, seed)


def attention_forward_ref(q, k, v, mask, scale, p=0.0, seed=0):
    probs = softmax_forward_ref(q @ k.swapaxes(-1, -2), scale, mask)
    return _dropped(probs, p, seed) @ v, probs


def attention_backward_ref(dout, q, k, v, probs, scale, p=0.0, seed=0):
    dv = _dropped(probs, p, seed).swapaxes(-1, -2) @ dout
    dprobs = _dropped(dout @ v.swapaxes(-1, -2), p, seed)
    dscores = softmax_backward_ref(probs, dprobs, scale)
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


@njit(fastmath=True, parallel=True, cache=True)
def attention_forward_kernel(q, k, v, mask, heads, scale, out, probs):
    """q, k, v (BH, T, D) float32, mask (B, T) additive over keys -> out (BH, T, D),
    probs (BH, T, T).

    for bh in prange(B*H):                  every head of every sequence, split over threads
        for i in range(T):                  one query row at a time
            s[j] = q[i] . k[j] * scale + mask[b, j];  m = max(s)        T dots of length D
            p[j] = exp(s[j] - m) / sum                                  softmax in place
            out[i] = sum_j p[j] v[j]                                    D-wide axpys

    Fuses QK^T, scale, mask, softmax and PV: the scores of one row live in the probs row that
    is written once; the backward needs only probs (plus q, k, v), so that is all it saves.
    """
    bh_count, t, d = q.shape
    for bh in prange(bh_count):
        mrow = mask[bh // heads]
        for i in range(t):
            prow = probs[bh, i]
            m = np.float32(-np.inf)
            for j in range(t):
                acc = np.float32(0.0)
                for c in range(d):
                    acc += q[bh, i, c] * k[bh, j, c]
                sj = acc * scale + mrow[j]
                prow[j] = sj
                m = max(m, sj)
            s = np.float32(0.0)
            for j in range(t):
                e = fast_exp(prow[j] - m)
                prow[j] = e
                s += e
            inv = np.float32(1.0) / s
            orow = out[bh, i]
            orow[:] = 0.0
            for j in range(t):
                pj = prow[j] * inv
                prow[j] = pj
                for c in range(d):
                    orow[c] += pj * v[bh, j, c]


@njit(fastmath=True, parallel=True, cache=True)
def attention_backward_kernel(dout, q, k, v, probs, scale, dq, dk, dv):
    """dout, q, k, v (BH, T, D), probs (BH, T, T) -> dq, dk, dv (BH, T, D), zeroed by caller.

    for bh in prange(B*H):
        for i in range(T):
            dp[j] = dout[i] . v[j];  rowdot = sum_j dp[j] p[j]          T dots of length D
            ds[j] = p[j] (dp[j] - rowdot) * scale                       softmax backward
            dq[i] += ds[j] k[j];  dk[j] += ds[j] q[i];  dv[j] += p[j] dout[i]

    Fuses the four matmuls and the softmax backward of one head: dprobs and dscores are one
    row of T floats, never a (T, T) array.
    """
    bh_count, t, d = q.shape
    for bh in prange(bh_count):
        dp = np.empty(t, np.float32)
        for i in range(t):
            prow = probs[bh, i]
            rowdot = np.float32(0.0)
            for j in range(t):
                acc = np.float32(0.0)
                for c in range(d):
                    acc += dout[bh, i, c] * v[bh, j, c]
                dp[j] = acc
                rowdot += acc * prow[j]
            for j in range(t):
                pj = prow[j]
                ds = pj * (dp[j] - rowdot) * scale
                for c in range(d):
                    dq[bh, i, c] += ds * k[bh, j, c]
                    dk[bh, j, c] += ds * q[bh, i, c]
                    dv[bh, j, c] += pj * dout[bh, i, c]


def _f32(*arrays):
    return all(a.dtype == np.float32 for a in arrays)


def _key_mask(mask, b, h, t):
    """The mask as (B, T) rows when it varies over batch and key only (None, (B,1,1,T),
    (1,1,1,T), (T,)); else None, and the wrapper takes the reference."""
    if mask is None:
        return np.zeros((b, t), np.float32)
    m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
    if m.shape[1] == 1 and m.shape[2] == 1 and m.shape[0] in (1, b) and m.shape[3] == t:
        return np.ascontiguousarray(np.broadcast_to(m[:, 0, 0, :], (b, t)), dtype=np.float32)
    return None


def _check(q, k, v):
    if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape}: expected three "
                         "equal (B, H, T, D) shapes")


def attention_forward(q, k, v, mask, scale, p=0.0, seed=0):
    """q, k, v (B, H, T, D) -> out (B, H, T, D), probs (B, H, T, T) (before dropout with
    probability p and mask seed `seed`).

    float32: Q K^T and P V in BLAS, the softmax (scale, mask, exp, normalise) as one fused
    kernel; other dtypes (float64 in gradient checks) run the reference."""
    _check(q, k, v)
    if use_ref() or not _f32(q, k, v) or q.size == 0:
        return attention_forward_ref(q, k, v, mask, scale, p, seed)
    scores = np.matmul(q, k.swapaxes(-1, -2))  # (B, H, T, T)
    if p == 0.0:
        probs = ksoftmax.softmax_forward(scores, scale, mask)
        return np.matmul(probs, v), probs
    probs, dropped = ksoftmax.softmax_dropout_forward(scores, scale, mask, p, seed, out=scores)
    return np.matmul(dropped, v), probs


def attention_backward(dout, q, k, v, probs, scale, p=0.0, seed=0, needs=(True, True, True)):
    """dout, q, k, v (B, H, T, D), probs (B, H, T, T) -> dq, dk, dv (B, H, T, D), each None
    where `needs` says that input needs no gradient: its product is skipped (under LoRA, layer
    0's frozen key never needs dk)."""
    if use_ref() or not _f32(dout, q, k, v, probs) or q.size == 0:
        grads = attention_backward_ref(dout, q, k, v, probs, scale, p, seed)
        return tuple(g if need else None for g, need in zip(grads, needs))
    need_q, need_k, need_v = needs
    dv = np.matmul(_dropped(probs, p, seed).swapaxes(-1, -2), dout) if need_v else None
    if not (need_q or need_k):
        return None, None, dv
    dprobs = np.matmul(dout, v.swapaxes(-1, -2))  # (B, H, T, T), the gradient of the dropped probs
    dscores = ksoftmax.softmax_backward(probs, dprobs, scale, p, seed)
    dq = np.matmul(dscores, k) if need_q else None
    dk = np.matmul(dscores.swapaxes(-1, -2), q) if need_k else None
    return dq, dk, dv


def attention_forward_numba(q, k, v, mask, scale):
    """The one-kernel path: q, k, v (B, H, T, D) float32 with a key-padding mask (shape
    (B, 1, 1, T) or broadcastable to it) -> out, probs. No dropout."""
    _check(q, k, v)
    b, h, t, d = q.shape
    mask2 = _key_mask(mask, b, h, t)
    if mask2 is None or not _f32(q, k, v):
        raise ValueError(f"attention_forward_numba: needs float32 and a (B, 1, 1, T) key mask, "
                         f"got {q.dtype} and mask {None if mask is None else mask.shape}")
    out = np.empty((b * h, t, d), np.float32)
    probs = np.empty((b * h, t, t), np.float32)
    attention_forward_kernel(*(np.ascontiguousarray(a).reshape(b * h, t, d) for a in (q, k, v)),
                             mask2, h, np.float32(scale), out, probs)
    return out.reshape(q.shape), probs.reshape(b, h, t, t)


def attention_backward_numba(dout, q, k, v, probs, scale):
    """The one-kernel backward: dout, q, k, v (B, H, T, D), probs (B, H, T, T) float32 ->
    dq, dk, dv."""
    b, h, t, d = q.shape
    flat = [np.ascontiguousarray(a).reshape(b * h, t, d) for a in (dout, q, k, v)]
    grads = [np.zeros((b * h, t, d), np.float32) for _ in range(3)]
    attention_backward_kernel(*flat, np.ascontiguousarray(probs).reshape(b * h, t, t),
                              np.float32(scale), *grads)
    return tuple(g.reshape(q.shape) for g in grads)
