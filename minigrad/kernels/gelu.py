"""GELU, exact erf form (the one BERT uses), forward and backward.

    y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
    dy/dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
"""
import math

import numpy as np

from . import use_ref



def erf_ref(x):
    """erf elementwise (NumPy has no erf ufunc): Abramowitz & Stegun 7.1.26, |error| < 1.5e-7,
    below float32's resolution of erf's range."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def gelu_forward_ref(x):
    return (0.5 * x * (1.0 + erf_ref(x / math.sqrt(2.0)))).astype(x.dtype)


def gelu_backward_ref(x, dy):
    cdf = 0.5 * (1.0 + erf_ref(x / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (dy * (cdf + x * pdf)).astype(x.dtype)


def gelu_forward(x):
    return gelu_forward_ref(x)


def gelu_backward(x, dy):
    return gelu_backward_ref(x, dy)
