"""Movement ops: they move, copy or select elements without arithmetic.

    reshape, permute, expand       backward undoes the view (expand's sum is the engine's
                                   un-broadcast)
    getitem, gather                backward scatter-adds, so repeated indices accumulate
    cat                            backward splits the gradient at the input boundaries

transpose, squeeze, unsqueeze, stack and split are compositions of these in functional.py.
"""
import numpy as np

from ..function import Function
from . import register


@register
class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape=None):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


@register
class Permute(Function):
    @staticmethod
    def forward(ctx, x, dims=None):
        ctx.inverse = tuple(np.argsort(dims))
        return x.transpose(dims)

    @staticmethod
    def backward(ctx, grad):
        return grad.transpose(ctx.inverse)


@register
class Expand(Function):
    """Broadcast to a larger shape without copying. The backward is the identity at the
    expanded shape: the engine's un-broadcast sums it back to the input's shape."""

    @staticmethod
    def forward(ctx, x, shape=None):
        return np.broadcast_to(x, shape)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _is_basic(index):
    """True when `index` uses only ints, slices, None and Ellipsis: such an index selects each
    element at most once, so backward may assign instead of the slower np.add.at."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis
               for p in parts)


@register
class GetItem(Function):
    """x[index] with NumPy semantics: basic (ints, slices, None, ...) and advanced (integer or
    boolean arrays). `index` is a constant; functional.getitem has unwrapped any Tensors in it."""

    @staticmethod
    def forward(ctx, x, index=None):
        ctx.shape, ctx.index = x.shape, index
        return np.asarray(x[index])

    @staticmethod
    def backward(ctx, grad):
        dx = np.zeros(ctx.shape, dtype=grad.dtype)
        if _is_basic(ctx.index):
            dx[ctx.index] = grad
        else:  # an integer array may repeat an index; add.at accumulates where += would not
            np.add.at(dx, ctx.index, grad)
        return dx


@register
class Gather(Function):
    """torch.gather: out[i][j][k] = x[i][index[i][j][k]][k] for dim=1 (likewise for any dim).
    `index` has x's number of dims and is no larger than x along the other dims."""

    @staticmethod
    def forward(ctx, x, dim=0, index=None):
        # the full coordinate tuple: `index` along dim, a broadcast arange along every other
        coords = list(np.ix_(*[np.arange(n) for n in index.shape]))
        coords[dim] = index
        ctx.shape, ctx.coords = x.shape, tuple(coords)
        return x[ctx.coords]

    @staticmethod
    def backward(ctx, grad):
        dx = np.zeros(ctx.shape, dtype=grad.dtype)
        np.add.at(dx, ctx.coords, grad)
        return dx


@register
class Cat(Function):
    """Concatenate along `dim`; backward hands each input its slice of the gradient."""

    @staticmethod
    def forward(ctx, *xs, dim=0):
        ctx.dim = dim
        ctx.bounds = np.cumsum([x.shape[dim] for x in xs])[:-1]
        return np.concatenate(xs, axis=dim)

    @staticmethod
    def backward(ctx, grad):
        parts = np.split(grad, ctx.bounds, axis=ctx.dim)
        return tuple(p if need else None for p, need in zip(parts, ctx.needs_input_grad))
