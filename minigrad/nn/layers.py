"""The basic layers: Linear, Embedding, LayerNorm, Dropout and activations.

Each checks its input's shape and dtype and names itself in the error, so a wrong tensor fails
at the layer that received it rather than deep inside a kernel.
"""
import math

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


def check_float_input(module, x, last_dim=None):
    """Raise a clear error unless x is a float Tensor whose last axis is `last_dim`."""
    name = type(module).__name__
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a Tensor input, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a float tensor, got {x.dtype} with shape {x.shape}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{name}: input shape {x.shape} does not end in {last_dim} features")


class Linear(Module):
    """y = x @ weight^T + bias.   x (..., in) -> (..., out); weight (out, in) as in PyTorch."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        self.bias = Parameter(np.empty(out_features, dtype)) if bias else None
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # PyTorch's default
        if self.bias is not None:
            bound = 1.0 / math.sqrt(in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        check_float_input(self, x, self.in_features)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Row lookup: ids (...) int -> (..., embedding_dim). The row padding_idx starts at zero
    and gets no gradient, as in torch."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"Embedding: padding_idx {padding_idx} is outside the table of "
                             f"{num_embeddings} rows")
        self.padding_idx = padding_idx
        self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype))
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0

    def forward(self, ids):
        ids = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"Embedding: ids must be integers, got {ids.dtype} with shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise IndexError(f"Embedding: ids must lie in [0, {self.num_embeddings}), "
                             f"got values in [{ids.min()}, {ids.max()}] (shape {ids.shape})")
        return F.embedding(ids, self.weight, self.padding_idx)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise over the last axis, then scale and shift: x (..., C) -> (..., C)."""

    def __init__(self, normalized_shape, eps=1e-5, dtype=np.float32):
        super().__init__()
        shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
        if len(shape) != 1:  # torch takes several trailing axes; the kernel normalises one
            raise ValueError(f"LayerNorm: normalized_shape {shape} has {len(shape)} axes; only the last "
                             "axis can be normalised (pass its width C)")
        self.normalized_shape, self.eps = int(shape[0]), eps
        self.weight = Parameter(np.ones(self.normalized_shape, dtype))
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype))

    def forward(self, x):
        check_float_input(self, x, self.normalized_shape)
        return F.layer_norm(x, (self.normalized_shape,), self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout while training; the identity in eval mode."""

    def __init__(self, p=0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        check_float_input(self, x)
        return F.gelu(x, approximate=self.approximate)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)
