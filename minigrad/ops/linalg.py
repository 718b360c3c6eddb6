"""Matrix products: batched `matmul` and the `linear` layer op. Both call the kernel layer
(`minigrad.kernels.matmul`), which picks BLAS or the Numba kernel per shape.

    matmul  a (..., M, K) @ b (..., K, N) -> (..., M, N)   batch dims broadcast
    linear  x (..., Cin), weight (Cout, Cin), bias (Cout,) -> (..., Cout)   PyTorch's layout

Each backward computes only the gradients asked for: under LoRA the frozen weight of a linear
layer needs no dW, so that matmul (a third of the layer's backward cost) is never run.
"""

from ..function import Function
from ..kernels import gelu as kgelu
from ..kernels import matmul as kmatmul
from . import register


@register
class MatMul(Function):
    """Operands have ndim >= 2 here; functional.matmul lifts 1-D operands to matrices."""

    @staticmethod
    def forward(ctx, a, b):
        need_a, need_b = ctx.needs_input_grad
        ctx.save_for_backward(a if need_b else None, b if need_a else None)
        return kmatmul.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        # at the broadcast batch shape; the engine sums over the batch dims an input lacked
        da = kmatmul.matmul(grad, b.swapaxes(-1, -2)) if ctx.needs_input_grad[0] else None
        db = kmatmul.matmul(a.swapaxes(-1, -2), grad) if ctx.needs_input_grad[1] else None
        return da, db


@register
class Linear(Function):
    """y = x @ weight^T + bias, optionally followed by GELU fused into the same kernel
    (`gelu=True`, BERT's feed-forward). Inputs are (x, weight) or (x, weight, bias).

    x is flattened to (N, Cin), N = B*T, so the kernel sees one matrix product.
    """

    @staticmethod
    def forward(ctx, x, weight, bias=None, gelu=False):
        x2d = x.reshape(-1, x.shape[-1])  # (N, Cin)
        y, h = kmatmul.linear_forward(x2d, weight, bias, gelu)  # h: pre-GELU (N, Cout) or None
        need_x, need_w = ctx.needs_input_grad[:2]
        ctx.x_shape = x.shape
        ctx.save_for_backward(x2d if need_w else None, weight if need_x else None, h)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2d, weight, h = ctx.saved
        dy = grad.reshape(-1, grad.shape[-1])  # (N, Cout)
        if h is not None:
            dy = kgelu.gelu_backward(h, dy)
        needs = ctx.needs_input_grad
        dx = kmatmul.matmul(dy, weight).reshape(ctx.x_shape) if needs[0] else None
        dweight = kmatmul.matmul(dy.T, x2d) if needs[1] else None
        if len(needs) == 2:
            return dx, dweight
        dbias = dy.sum(axis=0) if needs[2] else None
        return dx, dweight, dbias
