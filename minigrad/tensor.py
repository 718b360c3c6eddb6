"""`Tensor`: an `np.ndarray` plus what reverse-mode autodiff needs (`grad`, `requires_grad`,
and the node of the op that made it).

Operators and methods are thin: each calls the function of the same name in
`minigrad.functional`, where the ops live. The backward walk itself is in `function.py`.
"""
import numpy as np

from . import function

_FLOAT_DEFAULT = np.float32


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "_node", "name", "__weakref__")
    __array_priority__ = 1000  # so ndarray <op> Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad=False, dtype=None, _copy=True):
        if isinstance(data, Tensor):
            data = data.data
        if _copy or not isinstance(data, np.ndarray):
            data = np.array(data, dtype=dtype)
        elif dtype is not None and data.dtype != dtype:
            data = data.astype(dtype)
        if requires_grad and not np.issubdtype(data.dtype, np.floating):
            raise TypeError(f"tensor: only floating-point tensors can require grad, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self.name = None

    # ---- basic properties -------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    is_leaf = property(lambda self: self._node is None)
    T = property(lambda self: self.transpose(-1, -2))

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", grad_fn={self._node.fn.__name__}" if self._node is not None else ""
        return f"tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad}{op})"

    def numpy(self):
        return self.data

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self):
        """A new leaf sharing this tensor's data, cut from the graph."""
        return Tensor(self.data, _copy=False)

    def zero_grad(self):
        self.grad = None

    def requires_grad_(self, flag=True):
        if flag and not np.issubdtype(self.data.dtype, np.floating):
            raise TypeError(f"requires_grad_: only floating-point tensors can require grad, got {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def astype(self, dtype):
        return F.cast(self, dtype)

    float = lambda self: self.astype(np.float32)  # noqa: E731
    double = lambda self: self.astype(np.float64)  # noqa: E731

    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) * grad into every leaf that requires grad.

        `grad` defaults to 1.0 for a scalar; a non-scalar needs it explicitly, as in PyTorch.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph "
                               "(was it computed under no_grad(), or from tensors without requires_grad?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be implicitly created only for scalar outputs; "
                                   f"this tensor has shape {self.shape}. Pass grad= of that shape.")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward: grad has shape {grad.shape}, tensor has shape {self.shape}")
        function.backward(self, grad, retain_graph=retain_graph)

    # ---- operators (all defined in minigrad.functional) -----------------------------
    def __add__(self, other): return F.add(self, other)
    def __radd__(self, other): return F.add(other, self)
    def __sub__(self, other): return F.sub(self, other)
    def __rsub__(self, other): return F.sub(other, self)
    def __mul__(self, other): return F.mul(self, other)
    def __rmul__(self, other): return F.mul(other, self)
    def __truediv__(self, other): return F.div(self, other)
    def __rtruediv__(self, other): return F.div(other, self)
    def __pow__(self, other): return F.pow(self, other)
    def __rpow__(self, other): return F.pow(other, self)
    def __matmul__(self, other): return F.matmul(self, other)
    def __rmatmul__(self, other): return F.matmul(other, self)
    def __neg__(self): return F.neg(self)
    def __getitem__(self, index): return F.getitem(self, index)

    # comparisons give plain boolean arrays: they have no gradient
    def __lt__(self, other): return self.data < _raw(other)
    def __le__(self, other): return self.data <= _raw(other)
    def __gt__(self, other): return self.data > _raw(other)
    def __ge__(self, other): return self.data >= _raw(other)
    def __eq__(self, other): return self.data == _raw(other)  # `ids == pad_id`, as in torch
    def __ne__(self, other): return self.data != _raw(other)

    # Tensors stay hashable by identity (optimizer state is keyed by parameter); a dict finds
    # its key by identity before it would ever compare with `==`
    __hash__ = object.__hash__

    # ---- methods --------------------------------------------------------------------
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def sqrt(self): return F.sqrt(self)
    def tanh(self): return F.tanh(self)
    def sigmoid(self): return F.sigmoid(self)
    def relu(self): return F.relu(self)
    def abs(self): return F.abs(self)
    def clip(self, min=None, max=None): return F.clip(self, min, max)
    clamp = clip
    def sum(self, dim=None, keepdim=False, axis=None): return F.sum(self, dim, keepdim, axis=axis)
    def mean(self, dim=None, keepdim=False, axis=None): return F.mean(self, dim, keepdim, axis=axis)
    def max(self, dim=None, keepdim=False, axis=None): return F.max(self, dim, keepdim, axis=axis)
    def var(self, dim=None, keepdim=False, unbiased=True, axis=None):
        return F.var(self, dim, keepdim, unbiased=unbiased, axis=axis)
    def logsumexp(self, dim, keepdim=False): return F.logsumexp(self, dim, keepdim)
    def reshape(self, *shape): return F.reshape(self, *shape)
    view = reshape
    def transpose(self, dim0=-2, dim1=-1): return F.transpose(self, dim0, dim1)
    def permute(self, *dims): return F.permute(self, *dims)
    def expand(self, *shape): return F.expand(self, *shape)
    def squeeze(self, dim=None): return F.squeeze(self, dim)
    def unsqueeze(self, dim): return F.unsqueeze(self, dim)
    def gather(self, dim, index): return F.gather(self, dim, index)
    def masked_fill(self, mask, value): return F.masked_fill(self, mask, value)
    def split(self, split_size, dim=0): return F.split(self, split_size, dim)
    def softmax(self, dim=-1): return F.softmax(self, dim)
    def log_softmax(self, dim=-1): return F.log_softmax(self, dim)
    def matmul(self, other): return F.matmul(self, other)


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


# ---- constructors ---------------------------------------------------------------------
_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Seed the generator behind randn, dropout and minigrad.nn.init."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng():
    return _rng


def tensor(data, requires_grad=False, dtype=None):
    """A new leaf Tensor. Python floats become float32 (minigrad's default); float64 arrays stay."""
    if dtype is None and not isinstance(data, (np.ndarray, Tensor)):
        arr = np.asarray(data)
        dtype = _FLOAT_DEFAULT if arr.dtype == np.float64 else None
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=_FLOAT_DEFAULT, requires_grad=False):
    return Tensor(np.zeros(_shape(shape), dtype), requires_grad, _copy=False)


def ones(*shape, dtype=_FLOAT_DEFAULT, requires_grad=False):
    return Tensor(np.ones(_shape(shape), dtype), requires_grad, _copy=False)


def randn(*shape, dtype=_FLOAT_DEFAULT, requires_grad=False):
    return Tensor(_rng.standard_normal(_shape(shape)).astype(dtype), requires_grad, _copy=False)


def _shape(shape):
    """f(2, 3) and f((2, 3)) both mean the shape (2, 3) (constructors and functional's reshape)."""
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


from . import functional as F  # noqa: E402  (functional imports Tensor from this module)
