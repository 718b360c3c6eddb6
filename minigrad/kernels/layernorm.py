"""Layer normalisation over the last axis, forward and backward, one pass per row each.

    x (N, C), gamma (C,), beta (C,)
    mean = x.mean(-1); rstd = 1 / sqrt(var(x) + eps); xhat = (x - mean) * rstd
    y = xhat * gamma + beta                      -> (y (N, C), mean (N,), rstd (N,))
    backward: dbeta = sum dy; dgamma = sum dy * xhat;
              dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * gamma
"""
import numpy as np

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


def layer_norm_forward(x, gamma, beta, eps):
    return layer_norm_forward_ref(x, gamma, beta, eps)


def layer_norm_backward(dy, x, gamma, mean, rstd):
    return layer_norm_backward_ref(dy, x, gamma, mean, rstd)
