"""Elementwise ops with NumPy broadcasting: arithmetic, activations, where, cast.

Each backward returns the gradient at the broadcast (output) shape; the engine sums it back to
each input's shape. Inputs that need no gradient (`ctx.needs_input_grad`) get None, and their
factors are not even saved. Gradients keep the dtype of the forward values: a float32 graph
stays float32 (Python-float constants are "weak" under NumPy 2 and do not promote).
"""
import math

import numpy as np

from ..function import Function
from ..kernels import gelu as kgelu
from . import register


@register
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


@register
class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return grad, (-grad if ctx.needs_input_grad[1] else None)


@register
class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad
        ctx.save_for_backward(a if need_b else None, b if need_a else None)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        da = grad * b if ctx.needs_input_grad[0] else None
        db = grad * a if ctx.needs_input_grad[1] else None
        return da, db


@register
class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        da = grad / b if ctx.needs_input_grad[0] else None
        db = -grad * a / (b * b) if ctx.needs_input_grad[1] else None
        return da, db


@register
class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, grad):
        return -grad


@register
class Pow(Function):
    """a ** b. With a constant exponent (the usual case) the log term is never computed."""

    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved
        da = grad * b * a ** (b - 1) if ctx.needs_input_grad[0] else None
        db = None
        if ctx.needs_input_grad[1]:
            # d(a^b)/db = a^b log a, taken as 0 where a^b is 0 (so 0 ** b has a finite gradient)
            db = grad * np.where(out == 0, 0, out * np.log(np.where(a > 0, a, 1)))
        return da, db


@register
class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y


@register
class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return grad / x


@register
class Sqrt(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.sqrt(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad / (2.0 * y)


@register
class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * (1.0 - y * y)


@register
class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        # exp of a non-positive number only, so large |x| neither overflows nor warns
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad * y * (1.0 - y)


@register
class Relu(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x > 0)
        return np.maximum(x, 0)

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved
        return grad * positive


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@register
class Gelu(Function):
    """GELU. approximate="none": the exact erf form BERT uses (kernel layer);
    approximate="tanh": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as in GPT-2."""

    @staticmethod
    def forward(ctx, x, approximate="none"):
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        if approximate == "none":
            return kgelu.gelu_forward(x)
        u = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
        return 0.5 * x * (1.0 + u)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        if ctx.approximate == "none":
            return kgelu.gelu_backward(x, grad)
        u = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))
        du = (1.0 - u * u) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
        return grad * (0.5 * (1.0 + u) + 0.5 * x * du)


@register
class Maximum(Function):
    """Elementwise max; at ties each input gets half the gradient, as in PyTorch."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        return _select_grads(ctx, grad, np.greater)


@register
class Minimum(Function):
    """Elementwise min; at ties each input gets half the gradient, as in PyTorch."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        return _select_grads(ctx, grad, np.less)


def _select_grads(ctx, grad, wins):
    """Route grad to whichever of a, b won the comparison `wins`, splitting ties evenly."""
    a, b = ctx.saved
    share_a = wins(a, b) + 0.5 * (a == b)  # float64 weights; cast back below
    da = (grad * share_a).astype(grad.dtype) if ctx.needs_input_grad[0] else None
    db = (grad * (1.0 - share_a)).astype(grad.dtype) if ctx.needs_input_grad[1] else None
    return da, db


@register
class Clip(Function):
    """clamp(x, min, max) with constant bounds (either may be None); the gradient passes where
    min <= x <= max, as in PyTorch."""

    @staticmethod
    def forward(ctx, x, min=None, max=None):
        inside = np.ones(x.shape, dtype=bool)
        if min is not None:
            inside &= x >= min
        if max is not None:
            inside &= x <= max
        ctx.save_for_backward(inside)
        return np.clip(x, min, max).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved
        return grad * inside


@register
class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(np.sign(x))
        return np.abs(x)

    @staticmethod
    def backward(ctx, grad):
        (sign,) = ctx.saved
        return grad * sign


@register
class Where(Function):
    """where(cond, a, b): cond is a constant boolean array, broadcastable with a and b."""

    @staticmethod
    def forward(ctx, a, b, cond=None):
        ctx.cond = cond
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        zero = grad.dtype.type(0)
        da = np.where(ctx.cond, grad, zero) if ctx.needs_input_grad[0] else None
        db = np.where(ctx.cond, zero, grad) if ctx.needs_input_grad[1] else None
        return da, db


@register
class Cast(Function):
    """Change dtype; the gradient is cast back so each tensor's grad keeps its own dtype."""

    @staticmethod
    def forward(ctx, x, dtype=None):
        ctx.src_dtype = x.dtype
        return x.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.src_dtype)
