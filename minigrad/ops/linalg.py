"""Matrix products: batched `matmul`, the `linear` layer op and `lora_linear`, a Linear with
its LoRA adapter. All call the kernel layer (`minigrad.kernels.matmul`), which picks BLAS or
the Numba kernel per shape.

    matmul       a (..., M, K) @ b (..., K, N) -> (..., M, N)   batch dims broadcast
    linear       x (..., Cin), weight (Cout, Cin), bias (Cout,) -> (..., Cout)   PyTorch's layout
    lora_linear  linear + ((x @ lora_A^T) * scaling) @ lora_B^T, lora_A (r, Cin), lora_B (Cout, r)

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


@register
class LoraLinear(Function):
    """A Linear with its LoRA adapter as one op (PEFT's shapes, r the rank):

        u = x @ lora_A^T                       (N, r)
        t = u * scaling                        (N, r)   the scaled middle
        y = x @ weight^T + bias + t @ lora_B^T (N, Cout)
        x (..., Cin), weight (Cout, Cin), lora_A (r, Cin), lora_B (Cout, r), bias (Cout,)

    Inputs are (x, weight, lora_A, lora_B) or (x, weight, lora_A, lora_B, bias). Composed from
    Linear, Mul and Add this is five nodes, and the sum writes two more (N, Cout) arrays; here
    the bias and the rank-r term go into the BLAS product's output in one pass (`lora_update`),
    forward and, for dx, backward. The frozen base weight costs no dW product.
    """

    @staticmethod
    def forward(ctx, x, weight, lora_A, lora_B, bias=None, scaling=1.0):
        x2d = x.reshape(-1, x.shape[-1])  # (N, Cin)
        # scaled on the r-wide middle, not the (N, Cout) result: the same product, Cout / r
        # times less work (PEFT scales the result)
        t = kmatmul.linear_forward(x2d, lora_A)[0] * scaling  # (N, r)
        # the products as Linear computes them, so an adapter with B = 0 changes no bit of y
        h = kmatmul.linear_forward(x2d, weight)[0]  # (N, Cout)
        y = kmatmul.lora_update(h, t, lora_B, bias)
        need_x, need_w, need_a, need_b = ctx.needs_input_grad[:4]
        ctx.x_shape, ctx.scaling = x.shape, scaling
        ctx.save_for_backward(x2d if need_w or need_a else None, weight if need_x else None,
                              lora_A if need_x else None, lora_B if need_x or need_a else None,
                              t if need_b else None)
        return y.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x2d, weight, lora_A, lora_B, t = ctx.saved
        dy = grad.reshape(-1, grad.shape[-1])  # (N, Cout)
        needs = ctx.needs_input_grad
        need_x, need_w, need_a, need_b = needs[:4]
        du = kmatmul.matmul(dy, lora_B) * ctx.scaling if need_x or need_a else None  # (N, r)
        dx = None
        if need_x:  # dy W + du A, the rank-r term added in place
            dx = kmatmul.lora_update(kmatmul.matmul(dy, weight), du, lora_A.T).reshape(ctx.x_shape)
        dweight = kmatmul.matmul(dy.T, x2d) if need_w else None
        dlora_A = kmatmul.matmul(du.T, x2d) if need_a else None  # (r, Cin)
        dlora_B = kmatmul.matmul(dy.T, t) if need_b else None  # (Cout, r)
        if len(needs) == 4:
            return dx, dweight, dlora_A, dlora_B
        dbias = dy.sum(axis=0) if needs[4] else None
        return dx, dweight, dlora_A, dlora_B, dbias
