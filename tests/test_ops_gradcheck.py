"""Every registered op, gradchecked in float64 on every element of every input.

CASES maps each op class name in minigrad.ops.REGISTRY to its cases, (fn, inputs) or
(fn, inputs, gradcheck kwargs). `test_every_op_has_a_case` fails when an op is added without
one, and each case must actually run its op (checked on the recorded graph). Shapes are small
and include size-1 dims, odd sizes and broadcasting.
"""
import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad.function import graph_nodes
from minigrad.ops import REGISTRY
from minigrad.testing import gradcheck

_rng = np.random.default_rng(1234)


def leaf(*shape, low=None, high=None):
    """A float64 leaf that requires grad: standard normal, or uniform in [low, high)."""
    data = _rng.standard_normal(shape) if low is None else _rng.uniform(low, high, shape)
    return mg.tensor(data, requires_grad=True, dtype=np.float64)


def away_from_zero(*shape):
    """Values with |x| >= 0.1, so kinks (relu, abs) are never within eps of a sample."""
    x = _rng.uniform(0.1, 1.5, shape) * _rng.choice([-1.0, 1.0], shape)
    return mg.tensor(x, requires_grad=True, dtype=np.float64)


def const(*shape):
    """A constant input; bind it as a lambda default so every call of the case sees the same one."""
    return mg.tensor(_rng.standard_normal(shape), dtype=np.float64)


def mask_keep_first_col(b, h, t):
    m = np.where(_rng.random((b, 1, 1, t)) < 0.3, -1e9, 0.0)
    m[..., 0] = 0.0  # keep at least one key per row
    return m


CASES = {
    "Add": [(F.add, [leaf(3, 4), leaf(3, 4)]), (F.add, [leaf(2, 1, 3), leaf(4, 1)]),
            (lambda a: a + 2.5, [leaf(1, 5)])],
    "Sub": [(F.sub, [leaf(3, 1), leaf(1, 5)]), (lambda a: 1.0 - a, [leaf(3)]),
            (F.mse_loss, [leaf(2, 3), leaf(2, 3)]),
            (lambda x, y=const(2, 1): F.mse_loss(x, y, reduction="sum"), [leaf(2, 3)])],
    "Mul": [(F.mul, [leaf(2, 3), leaf(3)]), (lambda a: a * a, [leaf(1, 3, 1)])],
    "Div": [(F.div, [leaf(2, 3), leaf(2, 1, low=0.5, high=2.0)]),
            (lambda a: 2.0 / a, [leaf(5, low=0.5, high=2.0)])],
    "Neg": [(F.neg, [leaf(3, 1)])],
    "Pow": [(lambda a: a ** 3, [leaf(2, 3)]),
            (F.pow, [leaf(2, 3, low=0.5, high=2.0), leaf(3, low=-1.0, high=2.0)])],
    "Exp": [(F.exp, [leaf(2, 3)])],
    "Log": [(F.log, [leaf(3, 1, 2, low=0.2, high=3.0)])],
    "Sqrt": [(F.sqrt, [leaf(5, low=0.2, high=3.0)])],
    "Tanh": [(F.tanh, [leaf(2, 3)])],
    "Sigmoid": [(F.sigmoid, [leaf(7, low=-8.0, high=8.0)])],
    "Relu": [(F.relu, [away_from_zero(3, 5)])],
    "Gelu": [(F.gelu, [leaf(2, 5, low=-3.0, high=3.0)]),
             (lambda x: F.gelu(x, approximate="tanh"), [leaf(7, low=-3.0, high=3.0)])],
    "Maximum": [(F.maximum, [leaf(3, 4), leaf(4)]), (lambda a: F.maximum(a, 0.1), [away_from_zero(5)])],
    "Minimum": [(F.minimum, [leaf(1, 4), leaf(3, 1)])],
    "Clip": [(lambda x: F.clip(x, -0.5, 0.7), [away_from_zero(3, 5)]),
             (lambda x: x.clamp(min=0.05), [away_from_zero(4)])],
    "Abs": [(F.abs, [away_from_zero(2, 3)])],
    "Where": [(lambda a, b: F.where(np.array([True, False, True]), a, b), [leaf(2, 3), leaf(3)]),
              (lambda x: F.masked_fill(x, np.array([[True], [False]]), -1.0), [leaf(2, 3)])],
    # float32 in the middle limits the finite differences to float32's resolution
    "Cast": [(lambda x: F.cast(F.cast(x, np.float32), np.float64), [leaf(2, 3)],
              dict(eps=1e-3, atol=1e-3, rtol=1e-2))],
    "Sum": [(F.sum, [leaf(2, 3)]), (lambda x: x.sum(dim=1, keepdim=True), [leaf(2, 3, 1)]),
            (lambda x: F.sum(x, axis=(0, 2)), [leaf(2, 3, 4)])],
    "Mean": [(lambda x: x.mean(-1), [leaf(3, 5)]), (lambda x: F.mean(x, (0, 1), keepdim=True), [leaf(2, 3, 2)]),
             (lambda x: x.var(1), [leaf(2, 5)]),
             (lambda x: F.var(x, (0, 2), keepdim=True, unbiased=True), [leaf(2, 3, 4)])],
    "Max": [(F.max, [leaf(3, 4)]), (lambda x: x.max(dim=0), [leaf(3, 4)]),
            (lambda x: F.max(x, axis=(1, 2), keepdim=True), [leaf(2, 3, 5)])],
    "LogSumExp": [(lambda x: F.logsumexp(x, -1), [leaf(3, 5)]),
                  (lambda x: x.logsumexp((0, 1), keepdim=True), [leaf(2, 3, 1)])],
    "Reshape": [(lambda x: x.reshape(3, -1), [leaf(2, 3, 2)]), (lambda x: F.squeeze(x), [leaf(1, 3, 1)]),
                (lambda x: F.unsqueeze(x, -1), [leaf(2, 3)]), (lambda x: x.view(6), [leaf(2, 3)])],
    "Permute": [(lambda x: x.permute(2, 0, 1), [leaf(2, 3, 4)]), (lambda x: F.transpose(x, 0, -1), [leaf(2, 1, 3)]),
                (lambda x: x.T, [leaf(3, 5)])],
    "Expand": [(lambda x: x.expand(2, 3, 4), [leaf(3, 1)]), (lambda x: F.broadcast_to(x, (4, 3)), [leaf(3)])],
    "GetItem": [(lambda x: x[1:, ::2], [leaf(3, 5)]), (lambda x: x[:, 0], [leaf(2, 3, 4)]),
                (lambda x: x[np.array([0, 2, 0, 0])], [leaf(3, 2)]),
                (lambda x: x[[0, 1, 1], [2, 0, 2]], [leaf(2, 3)]),
                (lambda x: x[x.data > 0], [leaf(3, 3)]),
                (lambda x: x[..., None, mg.tensor(np.array([1, 1]))], [leaf(2, 3)]),
                (lambda x: F.mul(*F.split(x, 2, dim=1)[:2]), [leaf(3, 5)]),
                (lambda x: F.split(x, [1, 3])[1] * 2.0, [leaf(4, 2)])],
    "Gather": [(lambda x: F.gather(x, 1, np.array([[0, 0, 2], [1, 2, 2]])), [leaf(2, 3)]),
               (lambda x: x.gather(0, mg.tensor(np.array([[1], [1]]))), [leaf(3, 2)])],
    "Cat": [(lambda a, b: F.cat([a, b], dim=1), [leaf(2, 3), leaf(2, 1)]),
            (lambda a, b: F.stack([a, b], dim=-1), [leaf(3), leaf(3)]),
            (lambda x, c=const(1, 2): F.concatenate([x, c]), [leaf(3, 2)])],
    "MatMul": [(F.matmul, [leaf(3, 4), leaf(4, 5)]), (F.matmul, [leaf(2, 1, 3, 4), leaf(3, 4, 2)]),
               (F.matmul, [leaf(4), leaf(2, 4, 3)]), (F.matmul, [leaf(2, 3, 4), leaf(4)]),
               (F.matmul, [leaf(5), leaf(5)]), (lambda a, b=const(3, 1): a @ b, [leaf(1, 3)])],
    "Linear": [(F.linear, [leaf(2, 3, 4), leaf(5, 4), leaf(5)]), (F.linear, [leaf(3, 4), leaf(2, 4)]),
               (lambda x, w, b: F.linear(x, w, b, gelu=True), [leaf(3, 4), leaf(5, 4), leaf(5)]),
               (lambda x, w=const(2, 3): F.linear(x, w), [leaf(1, 3)])],
    # every input, x (N, Cin) or (B, T, Cin), weight (Cout, Cin), bias, lora_A (r, Cin), lora_B (Cout, r)
    "LoraLinear": [(lambda x, w, b, a, bb: F.lora_linear(x, w, b, a, bb, 0.7),
                    [leaf(2, 3, 5), leaf(7, 5), leaf(7), leaf(3, 5), leaf(7, 3)]),
                   (lambda x, w, a, bb: F.lora_linear(x, w, None, a, bb, 2.0),
                    [leaf(5, 3), leaf(1, 3), leaf(1, 3), leaf(1, 1)]),
                   (lambda x, a, bb, w=const(4, 3): F.lora_linear(x, w, None, a, bb, 1.5),
                    [leaf(1, 1, 3), leaf(3, 3), leaf(4, 3)])],
    "Softmax": [(F.softmax, [leaf(3, 5)]), (lambda x: F.softmax(x, dim=0), [leaf(3, 1, 2)])],
    "LogSoftmax": [(F.log_softmax, [leaf(3, 5)]), (lambda x: x.log_softmax(1), [leaf(2, 3, 2)])],
    "LayerNorm": [(lambda x, w, b: F.layer_norm(x, 5, w, b), [leaf(2, 3, 5), leaf(5), leaf(5)]),
                  (lambda x: F.layer_norm(x, (2, 3)), [leaf(1, 2, 3)])],
    "Dropout": [(lambda x: (mg.manual_seed(3), F.dropout(x, 0.4))[1], [leaf(3, 7)])],
    "DropoutAddLayerNorm": [
        (lambda x, r, w, b: F.dropout_add_layer_norm(x, r, w, b, p=0.0),
         [leaf(2, 3, 5), leaf(2, 3, 5), leaf(5), leaf(5)]),
        (lambda x, r, w, b: (mg.manual_seed(3), F.dropout_add_layer_norm(x, r, w, b, p=0.4))[1],
         [leaf(2, 3, 7), leaf(2, 3, 7), leaf(7), leaf(7)]),
        # x a constant: the backward then skips x's masked gradient
        (lambda r, w, b, x=const(1, 3, 7): (mg.manual_seed(4), F.dropout_add_layer_norm(x, r, w, b, 0.4))[1],
         [leaf(1, 3, 7), leaf(7), leaf(7)])],
    "Embedding": [(lambda w: F.embedding(np.array([[1, 3, 1], [0, 1, 1]]), w), [leaf(4, 3)]),
                  (lambda w: F.embedding(mg.tensor(np.array([2])), w), [leaf(3, 1)])],
    "CrossEntropy": [
        (lambda x: F.cross_entropy(x, np.array([0, 2, 1, 2])), [leaf(4, 3)]),
        (lambda x: F.cross_entropy(x, np.array([[0, -100, 1], [2, 2, -100]]), reduction="sum"),
         [leaf(2, 3, 3)]),
        (lambda x: F.cross_entropy(x, mg.tensor(np.array([1, -1, 0])), ignore_index=-1,
                                   reduction="none", label_smoothing=0.1), [leaf(3, 4)]),
        (lambda x: F.cross_entropy(x, np.array([4, 0]), label_smoothing=0.2), [leaf(2, 5)])],
    "ScaledDotProductAttention": [
        (F.scaled_dot_product_attention, [leaf(1, 2, 3, 4), leaf(1, 2, 3, 4), leaf(1, 2, 3, 4)]),
        (lambda q, k, v, m=mask_keep_first_col(2, 1, 5):
            F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.3),
         [leaf(2, 1, 5, 3), leaf(2, 1, 5, 3), leaf(2, 1, 5, 3)]),
        # dropout on the probabilities: reseeded so every evaluation drops the same entries
        (lambda q, k, v: (mg.manual_seed(5), F.scaled_dot_product_attention(q, k, v, dropout_p=0.3))[1],
         [leaf(2, 2, 4, 3), leaf(2, 2, 4, 3), leaf(2, 2, 4, 3)]),
        # fewer queries than keys (L = 2, S = 5), a key mask, dropout
        (lambda q, k, v, m=mask_keep_first_col(2, 1, 5):
            (mg.manual_seed(7), F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=0.2))[1],
         [leaf(2, 3, 2, 4), leaf(2, 3, 5, 4), leaf(2, 3, 5, 4)])],
}

ALL = [(name, case) for name, cases in CASES.items() for case in cases]


def test_every_op_has_a_case():
    missing = sorted(set(REGISTRY) - set(CASES))
    assert not missing, f"ops without a gradcheck case: {missing}"
    assert not set(CASES) - set(REGISTRY), "CASES names an op that is not registered"


def _op_names(out):
    return {node.fn.__name__ for node in graph_nodes(out._node)} if out._node is not None else set()


@pytest.mark.parametrize("name,case", ALL, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ALL)])
def test_gradcheck(name, case):
    fn, inputs, kwargs = case if len(case) == 3 else (*case, {})
    assert name in _op_names(fn(*inputs)), f"the case for {name} does not run {name}"
    assert gradcheck(fn, inputs, **kwargs)


def test_gradcheck_catches_a_wrong_backward():
    """gradcheck itself must fail on a broken gradient, or every pass above means nothing."""
    class Square(mg.function.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved
            return grad * x  # should be 2 x

    with pytest.raises(AssertionError, match="Square: input 0"):
        gradcheck(lambda x: Square.apply(x), [leaf(3)])
    with pytest.raises(AssertionError, match=r"Square: input 0 \(2, 3\): .* at \(\d, \d\) \(analytic"):
        gradcheck(lambda x: Square.apply(x), [leaf(2, 3)])  # the worst element as plain ints


def test_gradcheck_fails_on_nan_and_on_nothing_to_check():
    """A NaN gradient (or a NaN loss) compares False with every tolerance: it must fail, not pass;
    and with no input requiring grad there is nothing to compare."""
    class NanGrad(mg.function.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return grad * np.nan

    with pytest.raises(AssertionError, match="NanGrad: input 0 .* max error nan"):
        gradcheck(lambda x: NanGrad.apply(x), [leaf(3)])
    with pytest.raises(AssertionError, match="input 0"):
        with np.errstate(invalid="ignore"):
            gradcheck(F.log, [leaf(3, low=-2.0, high=-1.0)])  # log of negatives: NaN everywhere
    with pytest.raises(ValueError, match="gradcheck: no input is a Tensor that requires grad"):
        gradcheck(F.exp, [const(3)])


def test_gradcheck_catches_a_nan_gradient():
    """One NaN element among finite ones fails, and the message points at it."""
    Exp = REGISTRY["Exp"]

    class NanExp(Exp):  # the real Exp, its gradient poisoned at one element
        @staticmethod
        def backward(ctx, grad):
            dx = Exp.backward(ctx, grad)
            dx[1] = np.nan
            return dx

    with pytest.raises(AssertionError, match=r"NanExp: input 0 \(3,\).*analytic nan.*1 of 3"):
        gradcheck(lambda x: NanExp.apply(x), [leaf(3)])
