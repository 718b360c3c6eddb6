"""Scaled dot-product attention over all heads, forward and backward.

    q, k, v (B, H, T, D); mask additive, broadcastable to (B, H, T, T) (BERT: (B, 1, 1, T))
    probs = softmax(q @ k^T * scale + mask)      (B, H, T, T)
    out = probs @ v                              (B, H, T, D)
    backward: dv = probs^T @ dout; dprobs = dout @ v^T;
              dscores = probs * (dprobs - sum(dprobs * probs, -1)) * scale
              dq = dscores @ k; dk = dscores^T @ q
"""
import numpy as np

from . import use_ref
from .softmax import softmax_backward_ref, softmax_forward_ref


def attention_forward_ref(q, k, v, mask, scale):
    probs = softmax_forward_ref(q @ k.swapaxes(-1, -2), scale, mask)
    return probs @ v, probs


def attention_backward_ref(dout, q, k, v, probs, scale):
    dv = probs.swapaxes(-1, -2) @ dout
    dscores = softmax_backward_ref(probs, dout @ v.swapaxes(-1, -2), scale)
    return dscores @ k, dscores.swapaxes(-1, -2) @ q, dv


def attention_forward(q, k, v, mask, scale):
    return attention_forward_ref(q, k, v, mask, scale)


def attention_backward(dout, q, k, v, probs, scale):
    return attention_backward_ref(dout, q, k, v, probs, scale)
