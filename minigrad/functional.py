"""The functional API (torch.nn.functional names): every op as a function on Tensors.

Python scalars and NumPy arrays are accepted as constants; `dim`/`keepdim` follow torch and
`axis` (NumPy's name) is accepted too.
"""
import numpy as np

from .ops import elementwise as ew
from .ops import reduce as red
from .tensor import Tensor


def as_tensor(x, like=None):
    """Wrap a constant (scalar or ndarray) as a Tensor that needs no grad, in `like`'s dtype."""
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    if like is not None and np.issubdtype(like.dtype, np.floating) and arr.dtype.kind in "fiub":
        arr = arr.astype(like.dtype, copy=False)
    return Tensor(arr, _copy=False)


def _pair(a, b):
    if not isinstance(a, Tensor):
        a = as_tensor(a, like=b)
    if not isinstance(b, Tensor):
        b = as_tensor(b, like=a)
    return a, b


def _axis(dim, axis):
    d = dim if dim is not None else axis
    return tuple(d) if isinstance(d, list) else d


def add(a, b):
    return ew.Add.apply(*_pair(a, b))


def mul(a, b):
    return ew.Mul.apply(*_pair(a, b))


def sum(x, dim=None, keepdim=False, axis=None):
    return red.Sum.apply(x, axis=_axis(dim, axis), keepdims=keepdim)
