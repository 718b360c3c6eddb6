"""Softmax cross-entropy over the last axis, fused: loss and dlogits in one pass.

    logits (N, V), targets (N,) int  ->  losses (N,), dlogits (N, V)
    p = softmax(logits); losses[i] = -log p[i, t_i]  (with label smoothing eps:
        (1 - eps) * -log p[i, t_i] + eps * mean_v(-log p[i, v]))
    dlogits[i] = p[i] - q[i],  q = (1 - eps) * onehot(t_i) + eps / V
    rows whose target is ignore_index get loss 0 and dlogits 0.
"""
import numpy as np
from numba import njit, prange

from . import use_ref
from .fastmath import fast_exp


def softmax_cross_entropy_ref(logits, targets, ignore_index=-100, label_smoothing=0.0):
    n, v = logits.shape
    z = logits - logits.max(axis=-1, keepdims=True)
    logsum = np.log(np.exp(z).sum(axis=-1, keepdims=True))
    logp = z - logsum
    valid = targets != ignore_index
    safe_t = np.where(valid, targets, 0)
    nll = -logp[np.arange(n), safe_t]
    eps = label_smoothing
    losses = (1.0 - eps) * nll + eps * (-logp.mean(axis=-1)) if eps else nll
    q = np.zeros_like(logits)
    q[np.arange(n), safe_t] = 1.0 - eps
    q += eps / v
    dlogits = np.exp(logp) - q
    losses = np.where(valid, losses, 0.0).astype(logits.dtype)
    dlogits[~valid] = 0.0
    return losses, dlogits


@njit(fastmath=True, parallel=True, cache=True)
def softmax_cross_entropy_kernel(logits, targets, ignore_index, smoothing, losses, dlogits):
    """logits (N, V) float32, targets (N,) int64 -> losses (N,), dlogits (N, V).

    for n in prange(N):
        m = max(logits[n]); s = sum(exp(logits[n] - m)); zsum = sum(logits[n])   sweep 1, 2
        logsum = m + log(s)
        losses[n] = (1 - eps) (logsum - logits[n, t]) + eps (logsum - zsum / V)
        dlogits[n] = exp(logits[n] - logsum) - eps / V;  dlogits[n, t] -= 1 - eps   sweep 3

    Fuses log-softmax, the loss, the one-hot and the gradient: the probabilities never exist
    as a separate array, and a row of V = 30522 (120 KB) stays in L2 across the sweeps.
    """
    n_rows, v = logits.shape
    off = smoothing / v
    for n in prange(n_rows):
        t = targets[n]
        if t == ignore_index:
            losses[n] = 0.0
            for j in range(v):
                dlogits[n, j] = 0.0
            continue
        m = np.float32(-np.inf)
        zsum = np.float32(0.0)
        for j in range(v):
            m = max(m, logits[n, j])
            zsum += logits[n, j]
        s = np.float32(0.0)
        for j in range(v):
            s += fast_exp(logits[n, j] - m)
        logsum = m + np.log(s)
        losses[n] = (np.float32(1.0) - smoothing) * (logsum - logits[n, t])
        if smoothing > 0:  # else 0 * inf = nan for a row with a -inf logit (zsum = -inf)
            losses[n] += smoothing * (logsum - zsum / v)
        for j in range(v):
            dlogits[n, j] = fast_exp(logits[n, j] - logsum) - off
        dlogits[n, t] -= np.float32(1.0) - smoothing


def softmax_cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0):
    """logits (..., V), targets (...) int -> losses (...), dlogits (..., V), logits' dtype.

    float32 runs the kernel; other dtypes (float64 in gradient checks) the reference."""
    v = logits.shape[-1]
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: logits {logits.shape} need targets "
                         f"{logits.shape[:-1]}, got {targets.shape}")
    logits2, targets1 = logits.reshape(-1, v), targets.reshape(-1)
    valid = targets1 != ignore_index
    if np.any(valid & ((targets1 < 0) | (targets1 >= v))):
        raise ValueError(f"cross_entropy: targets must lie in [0, {v}) or equal ignore_index "
                         f"{ignore_index}")
    if use_ref() or logits.dtype != np.float32 or logits.size == 0:
        losses, dlogits = softmax_cross_entropy_ref(logits2, targets1, ignore_index,
                                                    label_smoothing)
    else:
        losses = np.empty(logits2.shape[0], np.float32)
        dlogits = np.empty(logits2.shape, np.float32)
        softmax_cross_entropy_kernel(np.ascontiguousarray(logits2), targets1.astype(np.int64),
                                     ignore_index, np.float32(label_smoothing), losses, dlogits)
    return losses.reshape(targets.shape), dlogits.reshape(logits.shape)
