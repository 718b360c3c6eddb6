"""AdamW update in one pass over a parameter buffer (decoupled weight decay), in place.

    p -= lr * weight_decay * p
    m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
    p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
"""
import math

import numpy as np
from numba import njit, prange

from . import use_ref


def adamw_update_ref(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    if weight_decay:
        p -= lr * weight_decay * p
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * g * g
    bc1 = 1 - beta1 ** step
    bc2 = 1 - beta2 ** step
    p -= lr * (m / bc1) / (np.sqrt(v / bc2) + eps)


@njit(fastmath=True, parallel=True, cache=True)
def adamw_update_kernel(p, g, m, v, lr, beta1, beta2, eps, decay, bc1, bc2_sqrt):
    """p, g, m, v (n,) float32, updated in place:

    for i in prange(n):
        m[i] = beta1 m + (1 - beta1) g;  v[i] = beta2 v + (1 - beta2) g^2
        p[i] = p (1 - lr wd) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)

    One read of p, g, m, v and one write of p, m, v, where the reference makes eight passes.
    """
    step_size = lr / bc1
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = beta1 * m[i] + (np.float32(1.0) - beta1) * gi
        vi = beta2 * v[i] + (np.float32(1.0) - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """p, g, m, v same shape; updates p, m, v in place (step counts from 1).

    float32 contiguous buffers run the kernel; anything else (float64, or a non-contiguous
    view, which a flat in-place kernel cannot write through) runs the reference."""
    if p.shape != g.shape or p.shape != m.shape or p.shape != v.shape:
        raise ValueError(f"adamw_update: p {p.shape}, g {g.shape}, m {m.shape}, v {v.shape} "
                         "must have one shape")
    bufs = (p, g, m, v)
    if (use_ref() or any(a.dtype != np.float32 for a in bufs)
            or not all(a.flags.c_contiguous for a in (p, m, v))):
        adamw_update_ref(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
        return
    f = np.float32
    adamw_update_kernel(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1),
                        v.reshape(-1), f(lr), f(beta1), f(beta2), f(eps),
                        f(1.0 - lr * weight_decay), f(1.0 - beta1 ** step),
                        f(math.sqrt(1.0 - beta2 ** step)))
