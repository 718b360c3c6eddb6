"""Softmax cross-entropy over the last axis, fused: loss and dlogits in one pass.

    logits (N, V), targets (N,) int  ->  losses (N,), dlogits (N, V)
    p = softmax(logits); losses[i] = -log p[i, t_i]  (with label smoothing eps:
        (1 - eps) * -log p[i, t_i] + eps * mean_v(-log p[i, v]))
    dlogits[i] = p[i] - q[i],  q = (1 - eps) * onehot(t_i) + eps / V
    rows whose target is ignore_index get loss 0 and dlogits 0.
"""
import numpy as np

from . import use_ref


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


def softmax_cross_entropy(logits, targets, ignore_index=-100, label_smoothing=0.0):
    return softmax_cross_entropy_ref(logits, targets, ignore_index, label_smoothing)
