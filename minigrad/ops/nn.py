"""The neural-network ops with hand-written backwards: softmax, log_softmax, layer_norm,
dropout, dropout + residual add + layer_norm fused, embedding, cross_entropy and scaled
dot-product attention.

Each is one Function whose forward saves the named values its backward needs (`probs`,
`mean`, `rstd`, the dropout seed) and calls the kernel layer, where the fused Numba
versions live. Shapes: B batch, T tokens, C width, H heads, D head size, K classes,
N = B*T rows, V vocab.
"""
import numpy as np

from ..function import Function
from ..kernels import attention as kattention
from ..kernels import cross_entropy as kcross_entropy
from ..kernels import dropout as kdropout
from ..kernels import embedding as kembedding
from ..kernels import layernorm as klayernorm
from ..kernels import softmax as ksoftmax
from ..tensor import get_rng
from . import register


@register
class Softmax(Function):
    """softmax over `dim`; the kernel works on the last axis, so another dim is moved there."""

    @staticmethod
    def forward(ctx, x, dim=-1):
        probs = ksoftmax.softmax_forward(np.moveaxis(x, dim, -1))
        ctx.dim = dim
        ctx.save_for_backward(probs)
        return np.moveaxis(probs, -1, dim)

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved
        dx = ksoftmax.softmax_backward(probs, np.moveaxis(grad, ctx.dim, -1), 1.0)
        return np.moveaxis(dx, -1, ctx.dim)


@register
class LogSoftmax(Function):
    """log_softmax = x - logsumexp(x); backward dx = grad - softmax(x) * sum(grad)."""

    @staticmethod
    def forward(ctx, x, dim=-1):
        z = x - x.max(axis=dim, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=dim, keepdims=True))
        ctx.dim = dim
        ctx.save_for_backward(np.exp(logp))
        return logp

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved
        return grad - probs * grad.sum(axis=ctx.dim, keepdims=True)


@register
class LayerNorm(Function):
    """Normalise over the trailing `ndim` axes (usually 1: C), then scale and shift.

    x (..., C) flattened to (N, C); weight, bias of the normalised shape. Saves mean (N,) and
    rstd (N,) so the backward needs no second pass over the statistics.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, ndim=1, eps=1e-5):
        width = int(np.prod(x.shape[x.ndim - ndim:]))
        x2d = x.reshape(-1, width)  # (N, C)
        y, mean, rstd = klayernorm.layer_norm_forward(x2d, weight.reshape(-1), bias.reshape(-1), eps)
        ctx.x_shape, ctx.w_shape = x.shape, weight.shape
        ctx.save_for_backward(x2d, weight.reshape(-1), mean, rstd)
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x2d, gamma, mean, rstd = ctx.saved
        dy = grad.reshape(x2d.shape)
        dx, dgamma, dbeta = klayernorm.layer_norm_backward(dy, x2d, gamma, mean, rstd)
        need_x, need_w, need_b = ctx.needs_input_grad
        return (dx.reshape(ctx.x_shape) if need_x else None,
                dgamma.reshape(ctx.w_shape) if need_w else None,
                dbeta.reshape(ctx.w_shape) if need_b else None)


@register
class Dropout(Function):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p),
    so eval mode is the identity. The mask is a function of one seed drawn from minigrad's
    seeded generator (kernels/dropout.py), so the only thing saved is that integer: the
    backward applies the same mask to the gradient by calling the kernel with the same seed."""

    @staticmethod
    def forward(ctx, x, p=0.5):
        ctx.p, ctx.seed = p, kdropout.new_seed(get_rng())
        return kdropout.dropout(x, p, ctx.seed)

    @staticmethod
    def backward(ctx, grad):
        return kdropout.dropout(grad, ctx.p, ctx.seed)


@register
class DropoutAddLayerNorm(Function):
    """layer_norm(dropout(x, p) + residual) * weight + bias over the last axis: Dropout, Add and
    LayerNorm as one op (BERT's sublayer output), one kernel pass forward and one backward.

    x, residual (..., C), weight, bias (C,); p = 0 means no dropout. The seed is drawn where the
    Dropout op draws it (only when p > 0), so fusing leaves the random stream unchanged. Saves
    the sum s = dropout(x) + residual (what LayerNorm saves as its input), mean, rstd (N,) and
    the seed; the backward's ds is residual's gradient and, through the same mask, x's.
    """

    @staticmethod
    def forward(ctx, x, residual, weight, bias, p=0.0, eps=1e-5):
        ctx.p, ctx.seed = p, kdropout.new_seed(get_rng()) if p > 0.0 else 0
        y, s, mean, rstd = klayernorm.dropout_add_layer_norm_forward(
            x, residual, weight, bias, p, ctx.seed, eps)
        ctx.save_for_backward(s, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad):
        s, gamma, mean, rstd = ctx.saved
        need_x, need_r, need_w, need_b = ctx.needs_input_grad
        # x's gradient costs a pass that draws the mask; without it (p = 0) dx is ds itself
        p = ctx.p if need_x else 0.0
        dx, ds, dgamma, dbeta = klayernorm.dropout_add_layer_norm_backward(
            grad, s, gamma, mean, rstd, p, ctx.seed)
        return (dx if need_x else None, ds if need_r else None,
                dgamma if need_w else None, dbeta if need_b else None)


@register
class Embedding(Function):
    """weight (V, C) looked up at integer ids (any shape S) -> (*S, C). Backward scatter-adds
    into the rows used, so a token seen twice gets both gradients (kernels/embedding.py); the
    row padding_idx, if given, gets none (torch's padding_idx: the padding vector stays put)."""

    @staticmethod
    def forward(ctx, weight, ids=None, padding_idx=None):
        ctx.ids, ctx.w_shape, ctx.padding_idx = ids, weight.shape, padding_idx
        return weight[ids]

    @staticmethod
    def backward(ctx, grad):
        dweight = kembedding.embedding_backward(ctx.ids, grad, ctx.w_shape[0])
        if ctx.padding_idx is not None:
            dweight[ctx.padding_idx] = 0
        return dweight


@register
class CrossEntropy(Function):
    """Softmax cross-entropy from logits (N, K) or (B, T, K) and class ids (N,) or (B, T),
    fused: the kernel returns the per-row losses and dlogits together, so the backward only
    scales the saved dlogits. Rows whose target is `ignore_index` count for nothing, and
    "mean" divides by the number of the other rows, as in PyTorch."""

    @staticmethod
    def forward(ctx, logits, target=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        logits2d = logits.reshape(-1, logits.shape[-1])  # (N, K)
        losses, dlogits = kcross_entropy.softmax_cross_entropy(
            logits2d, target.reshape(-1), ignore_index, label_smoothing)
        ctx.shape, ctx.reduction = logits.shape, reduction
        ctx.count = int(np.count_nonzero(target != ignore_index))
        ctx.save_for_backward(dlogits)
        if reduction == "none":
            return losses.reshape(target.shape)
        total = losses.sum(dtype=logits.dtype)
        return np.asarray(total if reduction == "sum" else total / logits.dtype.type(ctx.count))

    @staticmethod
    def backward(ctx, grad):
        (dlogits,) = ctx.saved
        if ctx.reduction == "none":
            dlogits = dlogits * grad.reshape(-1, 1)
        elif ctx.reduction == "sum":
            dlogits = dlogits * grad
        else:
            # every target ignored: the loss is nan (0 / 0, as torch), the gradient zeros
            dlogits = dlogits * (grad / grad.dtype.type(max(ctx.count, 1)))
        return dlogits.reshape(ctx.shape)


@register
class ScaledDotProductAttention(Function):
    """dropout(softmax(q @ k^T * scale + mask)) @ v over all heads at once.

    q (B, H, L, D), k, v (B, H, S, D); mask additive, broadcastable to (B, H, L, S), a constant.
    Saves probs (B, H, L, S) so the backward recomputes no softmax (and without a graph, makes
    none), and with dropout (dropout_p > 0) only the seed of the mask, which the backward
    recomputes (kernels/dropout.py).
    """

    @staticmethod
    def forward(ctx, q, k, v, mask=None, scale=1.0, dropout_p=0.0):
        seed = kdropout.new_seed(get_rng()) if dropout_p > 0.0 else 0
        out, probs = kattention.attention_forward(q, k, v, mask, scale, dropout_p, seed,
                                                  keep_probs=any(ctx.needs_input_grad[:3]))
        ctx.scale, ctx.p, ctx.seed = scale, dropout_p, seed
        ctx.save_for_backward(q, k, v, probs)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, probs = ctx.saved
        return kattention.attention_backward(grad, q, k, v, probs, ctx.scale, ctx.p, ctx.seed,
                                             needs=ctx.needs_input_grad[:3])
