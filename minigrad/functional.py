"""The functional API (torch / torch.nn.functional names): every op as a function on Tensors.

This is where arguments are checked and normalised before an op in `minigrad.ops` runs:
Python scalars and NumPy arrays become constant Tensors (in the other operand's dtype, so a
float32 graph stays float32), `dim`/`keepdim` follow torch and NumPy's `axis` is accepted too,
integer indices and targets may be ndarrays or integer Tensors, and a mismatch raises an error
naming the op and the shapes. Ops without a hand-written backward (transpose, squeeze, stack,
split, var, mse_loss, ...) are composed here from the registered ones.

Shapes: B batch, T tokens, C width, H heads, D head size, K classes, N = B*T rows, V vocab.
"""
import builtins
import math

import numpy as np

from .ops import elementwise as ew
from .ops import linalg
from .ops import movement as mv
from .ops import nn as nnops
from .ops import reduce as red
from .tensor import Tensor, _shape


# ---- argument handling ----------------------------------------------------------------
def as_tensor(x, like=None):
    """Wrap a constant (scalar or ndarray) as a Tensor that needs no grad, in `like`'s dtype."""
    if isinstance(x, Tensor):
        return x
    arr = np.asarray(x)
    if like is not None and np.issubdtype(like.dtype, np.floating) and arr.dtype.kind in "fiub":
        arr = arr.astype(like.dtype, copy=False)
    return Tensor(arr, _copy=False)


def _is_float(t):
    return np.issubdtype(t.dtype, np.floating)


def _check_float(op, *tensors):
    for t in tensors:
        if not _is_float(t):
            raise TypeError(f"{op}: expected a floating-point tensor, got {t.dtype} with shape "
                            f"{t.shape} (cast it with .float())")


def _pair(op, a, b, broadcast=True):
    """Two operands of a binary op as Tensors of one dtype, checked to broadcast (unless the
    op checks its own shapes, as matmul does)."""
    if not isinstance(a, Tensor):
        a = as_tensor(a, like=b)
    if not isinstance(b, Tensor):
        b = as_tensor(b, like=a)
    if a.dtype != b.dtype:
        # an integer operand carries no gradient, so it can simply take the float dtype
        if _is_float(a) and not _is_float(b):
            b = as_tensor(b.data, like=a)
        elif _is_float(b) and not _is_float(a):
            a = as_tensor(a.data, like=b)
        else:
            raise TypeError(f"{op}: dtypes {a.dtype} and {b.dtype} differ (shapes {a.shape} and "
                            f"{b.shape}); cast one with .float() or .double()")
    try:
        if broadcast:
            np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} do not broadcast") from None
    return a, b


def _dim(op, dim, ndim):
    """A dim in [-ndim, ndim) as a non-negative int (a 0-d tensor takes 0 and -1, as torch's)."""
    if not -builtins.max(ndim, 1) <= dim < builtins.max(ndim, 1):
        raise IndexError(f"{op}: dim {dim} out of range for a tensor with {ndim} dims")
    return dim % builtins.max(ndim, 1)


def _axes(op, dim, axis, ndim):
    """torch's dim or NumPy's axis (int, tuple, list or None) as None or a sorted tuple."""
    d = dim if dim is not None else axis
    if d is None:
        return None
    d = (d,) if isinstance(d, (int, np.integer)) else d
    axes = tuple(sorted(_dim(op, int(a), ndim) for a in d))
    return None if ndim == 0 else axes  # a 0-d tensor takes dim 0 or -1, as in torch: all of it


def _int_array(op, what, x):
    arr = np.asarray(x.data if isinstance(x, Tensor) else x)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{op}: {what} must be integers, got {arr.dtype} with shape {arr.shape}")
    return arr


# ---- elementwise ----------------------------------------------------------------------
def add(a, b):
    return ew.Add.apply(*_pair("add", a, b))


def sub(a, b):
    return ew.Sub.apply(*_pair("sub", a, b))


def mul(a, b):
    return ew.Mul.apply(*_pair("mul", a, b))


def div(a, b):
    a, b = _pair("div", a, b)
    _check_float("div", a, b)
    return ew.Div.apply(a, b)


def neg(x):
    return ew.Neg.apply(x)


def pow(a, b):
    a, b = _pair("pow", a, b)
    _check_float("pow", a, b)
    return ew.Pow.apply(a, b)


def _unary(cls, op):
    def f(x):
        _check_float(op, x)
        return cls.apply(x)
    f.__name__ = op
    f.__doc__ = f"{op}(x) elementwise; x float, any shape."
    return f


exp = _unary(ew.Exp, "exp")
log = _unary(ew.Log, "log")
sqrt = _unary(ew.Sqrt, "sqrt")
tanh = _unary(ew.Tanh, "tanh")
sigmoid = _unary(ew.Sigmoid, "sigmoid")
relu = _unary(ew.Relu, "relu")
abs = _unary(ew.Abs, "abs")


def gelu(x, approximate="none"):
    """GELU: approximate="none" is the exact erf form (BERT), "tanh" the tanh approximation."""
    _check_float("gelu", x)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate={approximate!r}, expected 'none' or 'tanh'")
    return ew.Gelu.apply(x, approximate=approximate)


def maximum(a, b):
    return ew.Maximum.apply(*_pair("maximum", a, b))


def minimum(a, b):
    return ew.Minimum.apply(*_pair("minimum", a, b))


def clip(x, min=None, max=None):
    return ew.Clip.apply(x, min=min, max=max)


clamp = clip


def where(cond, a, b):
    """a where cond is true, else b; cond is a boolean array or Tensor (no gradient)."""
    cond = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    a, b = _pair("where", a, b)
    try:
        np.broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: condition {cond.shape} and operands {a.shape}, {b.shape} "
                         "do not broadcast") from None
    return ew.Where.apply(a, b, cond=cond)


def masked_fill(x, mask, value):
    """x with `value` wherever the boolean `mask` (broadcastable to x) is true."""
    return where(mask, value, x)


def cast(x, dtype):
    """x in another dtype; its gradient is cast back to x's dtype. To a non-float dtype the
    result has no gradient (torch's rule), so it is a plain tensor outside the graph."""
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    if dtype.kind != "f":
        return Tensor(x.data.astype(dtype))
    return ew.Cast.apply(x, dtype=dtype)


# ---- reductions -----------------------------------------------------------------------
def sum(x, dim=None, keepdim=False, axis=None):
    return red.Sum.apply(x, axis=_axes("sum", dim, axis, x.ndim), keepdims=keepdim)


def mean(x, dim=None, keepdim=False, axis=None):
    _check_float("mean", x)
    return red.Mean.apply(x, axis=_axes("mean", dim, axis, x.ndim), keepdims=keepdim)


def max(x, dim=None, keepdim=False, axis=None):
    """The largest values over dim (torch.amax: values only, ties share the gradient)."""
    return red.Max.apply(x, axis=_axes("max", dim, axis, x.ndim), keepdims=keepdim)


def var(x, dim=None, keepdim=False, unbiased=True, axis=None):
    """Variance over dim: the sum of squared deviations divided by n - 1 (unbiased, torch's
    default) or by n. Like torch, nan where that divisor is 0."""
    _check_float("var", x)
    axes = _axes("var", dim, axis, x.ndim)
    n = red.reduced_size(x.shape, axes)
    d = x - mean(x, axes, keepdim=True)
    divisor = n - 1 if unbiased else n
    return sum(d * d, axes, keepdim) * (1.0 / divisor if divisor > 0 else float("nan"))


def logsumexp(x, dim, keepdim=False):
    _check_float("logsumexp", x)
    return red.LogSumExp.apply(x, axis=_axes("logsumexp", dim, None, x.ndim), keepdims=keepdim)


# ---- movement -------------------------------------------------------------------------
def reshape(x, *shape):
    shape = _shape(shape)
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) == 1 and known and x.size % known == 0:
        shape = tuple(x.size // known if n == -1 else n for n in shape)
    if int(np.prod(shape)) != x.size or builtins.min(shape, default=0) < 0:
        raise ValueError(f"reshape: cannot reshape {x.shape} ({x.size} elements) into {shape}")
    return x if shape == x.shape else mv.Reshape.apply(x, shape=shape)


view = reshape


def permute(x, *dims):
    dims = tuple(_dim("permute", d, x.ndim) for d in _shape(dims))
    if sorted(dims) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} dims of {x.shape}")
    return mv.Permute.apply(x, dims=dims)


def transpose(x, dim0, dim1):
    dims = list(range(x.ndim))
    d0, d1 = _dim("transpose", dim0, x.ndim), _dim("transpose", dim1, x.ndim)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return permute(x, dims)


def expand(x, *shape):
    """Broadcast x to `shape` without copying; -1 keeps that dim (counted from the right)."""
    shape = _shape(shape)
    lead = len(shape) - x.ndim
    shape = tuple(x.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(shape))
    try:
        ok = lead >= 0 and np.broadcast_shapes(x.shape, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"expand: cannot broadcast {x.shape} to {shape}")
    return x if shape == x.shape else mv.Expand.apply(x, shape=shape)


def broadcast_to(x, shape):
    return expand(x, shape)


def squeeze(x, dim=None):
    """Drop size-1 dims (all of them, or those in dim that have size 1, as torch)."""
    axes = range(x.ndim) if dim is None else _axes("squeeze", dim, None, x.ndim)
    drop = {a for a in axes if x.shape[a] == 1}
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if i not in drop))


def unsqueeze(x, dim):
    d = _dim("unsqueeze", dim, x.ndim + 1)
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def _index(index):
    """An index with Tensors and lists turned into ndarrays (NumPy indexing rules apply)."""
    if isinstance(index, tuple):
        return tuple(_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def getitem(x, index):
    index = _index(index)
    try:
        return mv.GetItem.apply(x, index=index)
    except IndexError as e:
        raise IndexError(f"getitem: {e} (tensor shape {x.shape})") from None


def gather(x, dim, index):
    """torch.gather: values of x along dim at `index` (same ndim as x, no larger elsewhere)."""
    index = _int_array("gather", "index", index)
    d = _dim("gather", dim, x.ndim)
    if index.ndim != x.ndim or any(i > n for a, (i, n) in enumerate(zip(index.shape, x.shape))
                                   if a != d):
        raise ValueError(f"gather: index {index.shape} does not fit x {x.shape} along dim {dim}")
    if index.size and (index.min() < -x.shape[d] or index.max() >= x.shape[d]):
        raise IndexError(f"gather: index out of range for dim {dim} of size {x.shape[d]}")
    return mv.Gather.apply(x, dim=d, index=index)


def cat(tensors, dim=0):
    """Concatenate along dim; every other dim must match."""
    tensors = [as_tensor(t, like=tensors[0]) for t in tensors]
    first = tensors[0]
    d = _dim("cat", dim, first.ndim)
    for t in tensors[1:]:
        if t.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape))
                                       if i != d):
            raise ValueError(f"cat: shapes {[t.shape for t in tensors]} differ outside dim {dim}")
        if t.dtype != first.dtype:
            raise TypeError(f"cat: dtypes {[str(t.dtype) for t in tensors]} differ")
    return mv.Cat.apply(*tensors, dim=d)


concatenate = cat


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dim."""
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: shapes {[t.shape for t in tensors]} differ")
    d = _dim("stack", dim, tensors[0].ndim + 1)
    return cat([unsqueeze(as_tensor(t), d) for t in tensors], d)


def split(x, split_size_or_sections, dim=0):
    """Pieces of x along dim: of size split_size (the last may be smaller), or of the listed
    sizes, as torch.split. Each piece is a view whose gradient flows back into x."""
    d = _dim("split", dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        sizes = [builtins.min(split_size_or_sections, n - s)
                 for s in range(0, n, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} (dim {dim} of {x.shape})")
    starts = np.cumsum([0] + sizes[:-1])
    lead = (slice(None),) * d
    return tuple(getitem(x, lead + (slice(int(s), int(s) + size),)) for s, size in zip(starts, sizes))


# ---- linear algebra -------------------------------------------------------------------
def matmul(a, b):
    """a (..., M, K) @ b (..., K, N) -> (..., M, N), batch dims broadcast. A 1-D operand is a
    vector: (K,) @ (..., K, N) -> (..., N) and (..., M, K) @ (K,) -> (..., M), as NumPy."""
    a, b = _pair("matmul", a, b, broadcast=False)
    _check_float("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: operands must have at least 1 dim")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: inner dimensions {a.shape[-1]} and "
                         f"{b.shape[-2 if b.ndim > 1 else 0]} differ")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: {a.shape} @ {b.shape}: batch dims do not broadcast") from None
    # a vector becomes a 1-row / 1-column matrix, and the extra dim is dropped afterwards
    out = linalg.MatMul.apply(unsqueeze(a, 0) if a.ndim == 1 else a,
                              unsqueeze(b, -1) if b.ndim == 1 else b)
    if b.ndim == 1:
        out = squeeze(out, -1)
    if a.ndim == 1:
        out = squeeze(out, -2 if b.ndim > 1 else -1)
    return out


def _check_linear(op, x, weight, bias):
    """The checks `linear` and `lora_linear` share; returns bias as a Tensor (or None)."""
    _check_float(op, x, weight)
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: input {x.shape} does not match weight {weight.shape} "
                         f"(expected input (..., {weight.shape[-1]}))")
    if x.dtype != weight.dtype:
        raise TypeError(f"{op}: input {x.dtype} {x.shape} and weight {weight.dtype} "
                        f"{weight.shape} differ in dtype")
    if bias is None:
        return None
    bias = as_tensor(bias, like=weight)
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"{op}: bias {bias.shape} does not match weight {weight.shape}")
    return bias


def linear(x, weight, bias=None, gelu=False):
    """x (..., Cin) @ weight (Cout, Cin)^T + bias (Cout,) -> (..., Cout), PyTorch's layout.
    gelu=True applies exact GELU in the same kernel (BERT's feed-forward)."""
    bias = _check_linear("linear", x, weight, bias)
    if bias is None:
        return linalg.Linear.apply(x, weight, gelu=gelu)
    return linalg.Linear.apply(x, weight, bias, gelu=gelu)


def lora_linear(x, weight, bias, lora_A, lora_B, scaling):
    """linear(x, weight, bias) + ((x @ lora_A^T) * scaling) @ lora_B^T in one op, PEFT's shapes:
    x (..., Cin), weight (Cout, Cin), bias (Cout,) or None, lora_A (r, Cin), lora_B (Cout, r)
    -> (..., Cout). The LoRA layer's forward when its dropout is the identity."""
    bias = _check_linear("lora_linear", x, weight, bias)
    _check_float("lora_linear", lora_A, lora_B)
    r = lora_A.shape[0] if lora_A.ndim == 2 else None
    if lora_A.shape != (r, weight.shape[1]) or lora_B.shape != (weight.shape[0], r):
        raise ValueError(f"lora_linear: weight {weight.shape}, lora_A {lora_A.shape}, lora_B "
                         f"{lora_B.shape}: expected lora_A (r, Cin) and lora_B (Cout, r)")
    for name, t in (("lora_A", lora_A), ("lora_B", lora_B)):
        if t.dtype != x.dtype:
            raise TypeError(f"lora_linear: input {x.dtype} {x.shape} and {name} {t.dtype} "
                            f"{t.shape} differ in dtype")
    if bias is None:
        return linalg.LoraLinear.apply(x, weight, lora_A, lora_B, scaling=scaling)
    return linalg.LoraLinear.apply(x, weight, lora_A, lora_B, bias, scaling=scaling)


# ---- neural-network ops ---------------------------------------------------------------
def softmax(x, dim=-1):
    _check_float("softmax", x)
    return nnops.Softmax.apply(x, dim=_dim("softmax", dim, x.ndim))


def log_softmax(x, dim=-1):
    _check_float("log_softmax", x)
    return nnops.LogSoftmax.apply(x, dim=_dim("log_softmax", dim, x.ndim))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise x (..., C) over its trailing normalized_shape (usually (C,)), then scale by
    weight and shift by bias (ones and zeros when None)."""
    _check_float("layer_norm", x)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: input {x.shape} does not end in normalized_shape {shape}")
    weight = as_tensor(np.ones(shape, x.dtype) if weight is None else weight, like=x)
    bias = as_tensor(np.zeros(shape, x.dtype) if bias is None else bias, like=x)
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != shape:
            raise ValueError(f"layer_norm: {name} {t.shape} does not match normalized_shape {shape}")
    return nnops.LayerNorm.apply(x, weight, bias, ndim=len(shape), eps=eps)


def dropout_add_layer_norm(x, residual, weight, bias, p=0.5, training=True, eps=1e-5):
    """layer_norm(dropout(x, p, training) + residual, C, weight, bias, eps) as one op:
    x, residual (..., C), weight, bias (C,) -> (..., C). The mask, and the seed it takes from
    minigrad's generator, are those `dropout` would use, so the result is the composition's."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout_add_layer_norm: p={p} is not a probability")
    _check_float("dropout_add_layer_norm", x)
    residual, weight, bias = (as_tensor(t, like=x) for t in (residual, weight, bias))
    if residual.shape != x.shape:
        raise ValueError(f"dropout_add_layer_norm: x {x.shape} and residual {residual.shape} differ")
    if residual.dtype != x.dtype:
        raise TypeError(f"dropout_add_layer_norm: x {x.dtype} and residual {residual.dtype} "
                        f"(shape {x.shape}) differ in dtype")
    c = x.shape[-1] if x.ndim else None
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (c,):
            raise ValueError(f"dropout_add_layer_norm: {name} {t.shape} does not match x {x.shape}: "
                             f"expected ({c},)")
    return nnops.DropoutAddLayerNorm.apply(x, residual, weight, bias, p=p if training else 0.0,
                                           eps=eps)


def dropout(x, p=0.5, training=True):
    """Inverted dropout; the identity when not training or p == 0."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p={p} is not a probability")
    if not training or p == 0.0:
        return x
    _check_float("dropout", x)
    return nnops.Dropout.apply(x, p=p)


def embedding(ids, weight, padding_idx=None):
    """Rows of weight (V, C) at integer ids (any shape S) -> (*S, C); the row padding_idx
    (if given) gets no gradient."""
    ids = _int_array("embedding", "ids", ids)
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (V, C), got {weight.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= weight.shape[0]):
        raise IndexError(f"embedding: ids in [{ids.min()}, {ids.max()}] out of range for "
                         f"weight {weight.shape} (vocabulary of {weight.shape[0]})")
    if padding_idx is not None and not -weight.shape[0] <= padding_idx < weight.shape[0]:
        raise IndexError(f"embedding: padding_idx {padding_idx} out of range for weight "
                         f"{weight.shape}")
    return nnops.Embedding.apply(weight, ids=ids, padding_idx=padding_idx)


def cross_entropy(input, target, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, K) or (B, T, K) against class ids (N,) or (B, T).

    Unlike torch, a 3-D input keeps classes last (B, T, K), the layout a token-classification
    head produces. reduction: "mean" (over targets != ignore_index), "sum" or "none".
    """
    _check_float("cross_entropy", input)
    target = _int_array("cross_entropy", "targets", target)
    if input.ndim < 2 or target.shape != input.shape[:-1]:
        raise ValueError(f"cross_entropy: logits {input.shape} and target {target.shape} "
                         "do not match (expected logits (..., K) and target (...))")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction={reduction!r}, expected 'mean', 'sum' or 'none'")
    valid = target[target != ignore_index]
    if valid.size and (valid.min() < 0 or valid.max() >= input.shape[-1]):
        raise IndexError(f"cross_entropy: targets in [{valid.min()}, {valid.max()}] out of range "
                         f"for {input.shape[-1]} classes")
    return nnops.CrossEntropy.apply(input, target=target, ignore_index=ignore_index,
                                    reduction=reduction, label_smoothing=label_smoothing)


def mse_loss(input, target, reduction="mean"):
    """Squared error (input - target)^2, averaged ("mean"), summed ("sum") or not ("none")."""
    d = sub(input, target)
    if d.shape != input.shape:
        raise ValueError(f"mse_loss: input {input.shape} and target {np.shape(target)} differ")
    sq = d * d
    if reduction == "none":
        return sq
    if reduction not in ("mean", "sum"):
        raise ValueError(f"mse_loss: reduction={reduction!r}, expected 'mean', 'sum' or 'none'")
    return mean(sq) if reduction == "mean" else sum(sq)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, scale=None):
    """dropout(softmax(q @ k^T * scale + attn_mask), dropout_p) @ v, torch's signature.

    q (B, H, L, D) queries, k and v (B, H, S, D) keys and values -> (B, H, L, D); self-attention
    has L = S = T, and L < S attends from fewer positions (BERT's classifier: the [CLS] row
    only). attn_mask is additive (float, 0 to keep, -inf or a large negative to hide) or boolean
    (True to keep, as torch), broadcastable to (B, H, L, S). scale defaults to 1/sqrt(D). As in
    torch, dropout_p applies whenever it is > 0: pass 0.0 in eval mode.
    """
    _check_float("scaled_dot_product_attention", q, k, v)
    if (q.ndim != 4 or k.ndim != 4 or v.shape != k.shape or q.shape[:2] != k.shape[:2]
            or q.shape[3] != k.shape[3] or len({q.dtype, k.dtype, v.dtype}) != 1):
        raise ValueError(f"scaled_dot_product_attention: q {q.shape}, k {k.shape}, v {v.shape}: "
                         "expected q (B, H, L, D) and k, v (B, H, S, D), of one dtype")
    mask = None
    if attn_mask is not None:
        mask = np.asarray(attn_mask.data if isinstance(attn_mask, Tensor) else attn_mask)
        if mask.dtype == bool:
            mask = np.where(mask, 0.0, -np.inf)
        mask = mask.astype(q.dtype, copy=False)
        full = (*q.shape[:3], k.shape[2])
        try:
            np.broadcast_shapes(mask.shape, full)
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: mask {mask.shape} does not broadcast "
                             f"to (B, H, L, S) = {full}") from None
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p={dropout_p} is not in [0, 1)")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return nnops.ScaledDotProductAttention.apply(q, k, v, mask=mask, scale=scale, dropout_p=dropout_p)
