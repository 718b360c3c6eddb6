"""AdamW update in one pass over a parameter buffer (decoupled weight decay), in place.

    p -= lr * weight_decay * p
    m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
    p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
"""
import numpy as np

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


def adamw_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
    adamw_update_ref(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step)
