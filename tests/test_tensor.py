"""The autodiff engine through the Tensor API: graph walking, accumulation, grad mode, graph
release, dtype discipline, skipped gradients, error messages and the DOT picture."""
import warnings

import numpy as np
import pytest

import minigrad as mg
from minigrad.function import Node, graph_nodes
import minigrad.functional as F


def test_long_chain_has_no_recursion_limit():
    x = mg.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    assert np.isclose(x.grad[0], 1.0001 ** 10_000, rtol=1e-3)


def test_reused_node_gets_both_gradients():
    x = mg.tensor([3.0, -2.0], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, -4.0])
    # a diamond: y used by two branches that meet again
    x = mg.tensor(2.0, requires_grad=True)
    y = x * 3.0
    (y * y + y).backward()
    assert x.grad == pytest.approx(2 * 6.0 * 3.0 + 3.0)


def test_in_place_sums_never_write_an_ops_own_gradient():
    """backward adds a node's third and later gradients into the sum it allocated for the second;
    Add hands the same array to both its inputs, so adding into that one would corrupt the
    other's gradient."""
    x = mg.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    w = mg.tensor(np.array([0.5, 4.0, -1.0]), requires_grad=True)
    y = x * 2.0                          # used four times below
    a = y + w                            # Add: the same gradient array for y and for w
    z = (a + y + y * y + y).sum()        # dz/dy = 1 + 1 + 2y + 1, dz/dw = 1
    z.backward()
    np.testing.assert_allclose(w.grad, np.ones(3))
    np.testing.assert_allclose(x.grad, 2.0 * (3.0 + 2.0 * y.data))


def test_gradients_accumulate_until_zeroed():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])
    x.zero_grad()
    assert x.grad is None
    (x * 4.0).sum().backward()
    np.testing.assert_allclose(x.grad, [4.0, 4.0])


def test_no_grad_context_manager_and_decorator():
    x = mg.tensor([1.0], requires_grad=True)
    with mg.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf

    @mg.no_grad()
    def f(t):
        return t * 2.0

    assert not f(x).requires_grad
    assert (x * 2.0).requires_grad  # grad mode restored after both

    @mg.no_grad()
    def recurse(n):  # each call enters the decorator afresh: the outer one restores grad mode
        return recurse(n - 1) if n else None

    recurse(2)
    assert mg.is_grad_enabled() and (x * 2.0).requires_grad


def test_detach_cuts_the_graph():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    (x * d).sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])  # d counted as a constant


def test_retain_graph():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()
    x.zero_grad()
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * np.array([2.0, 4.0]))


def test_backward_on_non_scalar_needs_grad():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar outputs.*shape \\(2,\\)"):
        (x * 2.0).backward()
    (x * 2.0).backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [2.0, 20.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.tensor([1.0]).backward()


def _every_op_graph(rng):
    """A small MLP-like float32 graph touching every op; returns (loss, leaves)."""
    f32 = lambda *s: mg.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)  # noqa: E731
    x, w1, b1, w2, emb, g = f32(2, 3, 4), f32(6, 4), f32(6), f32(4, 6), f32(5, 6), f32(6)
    ids = np.array([[0, 4, 1], [2, 2, 3]])
    h = F.linear(x, w1, b1) + F.embedding(ids, emb)                       # (B, T, C)
    h = F.layer_norm(h, 6, g, None)
    h = F.gelu(h) + F.gelu(h, approximate="tanh") + F.relu(h) * F.sigmoid(h) - F.tanh(h)
    h = F.dropout(h, 0.1) / 2.0
    q = h.reshape(2, 3, 2, 3).transpose(1, 2)                              # (B, H, T, D)
    a = F.scaled_dot_product_attention(q, q, q, attn_mask=np.zeros((2, 1, 1, 3), np.float32))
    h = F.permute(a, 0, 2, 1, 3).reshape(2, 3, 6)
    h = F.cat([h, F.stack([h[:, 0], h[:, 1]], 1)], 1)[:, [0, 2, 2]]        # (B, T, C)
    logits = F.linear(h, w2, gelu=True)                                    # (B, T, K)
    loss = F.cross_entropy(logits, np.array([[0, 1, -100], [3, 3, 2]]), label_smoothing=0.1)
    aux = (F.softmax(logits).mean() + F.log_softmax(logits, 1).sum(-1).max()
           + F.logsumexp(logits, -1).var() + F.exp(F.clip(logits, -1, 1)).abs().sum()
           + F.sqrt(F.maximum(logits, 0.5)).sum() + F.log(F.minimum(F.abs(logits) + 1, 3.0)).sum()
           + F.gather(logits, 2, np.zeros((2, 3, 1), np.int64)).sum() + (logits ** 2).mean()
           + F.where(logits > 0, logits, -logits).sum() + F.masked_fill(logits, logits < 0, 0.0).sum()
           + F.expand(b1, 3, 6).sum() + F.squeeze(F.unsqueeze(b1, 0)).sum()
           + F.split(b1, 4)[1].sum() + F.mse_loss(logits, np.zeros((2, 3, 4)))
           + F.matmul(b1, w2.T).sum() + F.cast(F.cast(b1, np.float64), np.float32).sum() - (-b1).sum())
    return loss + aux * 0.01, [x, w1, b1, w2, emb, g]


def test_float32_graph_stays_float32(rng):
    loss, leaves = _every_op_graph(rng)
    assert loss.dtype == np.float32
    nodes = graph_nodes(loss._node)
    leaves_in = [p for n in nodes for p in n.parents if not isinstance(p, Node)]
    # every intermediate forward value (each node's output) and every leaf input
    wide = [n.shape for n in nodes if n.dtype != np.float32]
    wide += [t.shape for t in leaves_in if np.issubdtype(t.dtype, np.floating) and t.dtype != np.float32]
    assert wide == [(6,)]  # only the value between the float64 round-trip casts
    loss.backward()
    for leaf in leaves:
        assert leaf.grad is not None and leaf.grad.dtype == np.float32 and leaf.grad.shape == leaf.shape


def test_float32_gradients_of_every_op_stay_float32(rng, monkeypatch):
    """Also the non-leaf gradients: intercept what each op's backward hands to the engine."""
    from minigrad import function
    seen = []
    orig = function.unbroadcast
    monkeypatch.setattr(function, "unbroadcast",
                        lambda g, shape: seen.append((g.dtype, shape)) or orig(g, shape))
    loss, _ = _every_op_graph(rng)
    loss.backward()
    assert len(seen) > 50
    assert [s for d, s in seen if d != np.float32] == [(6,)]  # the gradient between the casts


def test_frozen_inputs_get_no_gradient_and_cost_no_matmul(monkeypatch):
    from minigrad.kernels import matmul as kmatmul
    x = mg.randn(4, 3, requires_grad=True)
    w = mg.randn(5, 3)  # frozen, as a base weight under LoRA
    b = mg.zeros(5, requires_grad=True)
    calls = []
    orig = kmatmul.matmul
    monkeypatch.setattr(kmatmul, "matmul", lambda a, c: calls.append((a.shape, c.shape)) or orig(a, c))
    F.linear(x, w, b).sum().backward()
    assert w.grad is None and x.grad.shape == (4, 3) and b.grad.shape == (5,)
    assert calls == [((4, 5), (5, 3))]  # dx only: no dW = dy^T @ x
    # and the other way round: a frozen input, trainable weight
    calls.clear()
    x2 = mg.randn(4, 3)
    w2 = mg.randn(5, 3, requires_grad=True)
    F.linear(x2, w2).sum().backward()
    assert x2.grad is None and calls == [((5, 4), (4, 3))]


def test_needs_input_grad_is_all_false_without_a_graph():
    seen = []

    class Probe(mg.function.Function):
        @staticmethod
        def forward(ctx, x):
            seen.append(ctx.needs_input_grad)
            return x

    x = mg.randn(2, requires_grad=True)
    Probe.apply(x)
    with mg.no_grad():
        Probe.apply(x)
    assert seen == [(True,), (False,)]


@pytest.mark.parametrize("call,message", [
    (lambda: F.matmul(mg.randn(4, 384), mg.randn(512, 2)),
     r"matmul: \(4, 384\) @ \(512, 2\): inner dimensions 384 and 512 differ"),
    (lambda: F.linear(mg.randn(2, 3, 384), mg.randn(2, 512)),
     r"linear: input \(2, 3, 384\) does not match weight \(2, 512\)"),
    (lambda: mg.randn(2, 3) + mg.randn(4), r"add: shapes \(2, 3\) and \(4,\) do not broadcast"),
    (lambda: F.reshape(mg.randn(2, 3), 4, 2), r"reshape: cannot reshape \(2, 3\)"),
    (lambda: F.cat([mg.randn(2, 3), mg.randn(3, 2)], 1), r"cat: shapes"),
    (lambda: F.cross_entropy(mg.randn(4, 3), np.array([0, 1])), r"cross_entropy: logits \(4, 3\)"),
    (lambda: F.layer_norm(mg.randn(2, 5), 4), r"layer_norm: input \(2, 5\)"),
    (lambda: F.scaled_dot_product_attention(*[mg.randn(2, 3, 4)] * 3), r"scaled_dot_product_attention"),
])
def test_shape_errors_name_the_op_and_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call,op", [
    (lambda x: F.exp(x), "exp"), (lambda x: F.softmax(x), "softmax"),
    (lambda x: F.matmul(x, x), "matmul"), (lambda x: F.layer_norm(x, 2), "layer_norm"),
    (lambda x: F.linear(x, x), "linear"), (lambda x: x.mean(), "mean"),
    (lambda x: F.cross_entropy(x, np.array([0, 1])), "cross_entropy"),
])
def test_int_tensors_into_float_ops_raise_type_error(call, op):
    with pytest.raises(TypeError, match=rf"^{op}: .*int64"):
        call(mg.tensor(np.array([[1, 2], [3, 4]])))


def test_dtype_and_index_errors():
    with pytest.raises(TypeError, match=r"add: dtypes float32 and float64 differ"):
        mg.randn(2) + mg.randn(2, dtype=np.float64)
    with pytest.raises(TypeError, match="embedding: ids must be integers"):
        F.embedding(np.array([0.5]), mg.randn(3, 2))
    with pytest.raises(IndexError, match=r"embedding: ids in \[0, 7\] out of range"):
        F.embedding(np.array([0, 7]), mg.randn(3, 2))
    with pytest.raises(IndexError, match="cross_entropy: targets"):
        F.cross_entropy(mg.randn(2, 3), np.array([0, 3]))


def test_comparisons_are_elementwise_as_in_torch():
    ids = mg.tensor(np.array([5, 0, 0]))
    assert (ids == 0).tolist() == [False, True, True]
    assert (ids != 0).tolist() == [True, False, False]
    assert (0 == ids).tolist() == [False, True, True]
    x = mg.tensor([1.0, 2.0, 3.0])
    assert F.masked_fill(x, ids == 0, -1.0).tolist() == [1.0, -1.0, -1.0]
    assert {x: 1}[x] == 1  # still hashable by identity (optimizer state is keyed by parameter)


def test_cast_to_an_integer_type_leaves_the_graph():
    x = mg.tensor([1.5, 2.5], requires_grad=True)
    y = x.astype(np.int64)
    assert y.tolist() == [1, 2] and y.dtype == np.int64 and not y.requires_grad


def test_mean_and_var_over_empty_or_single_elements():
    for shape in ((0, 3), (2, 0)):  # no means at all; two means of no elements (nan)
        x = mg.tensor(np.zeros(shape), requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            x.mean(1).sum().backward()
        assert x.grad.shape == shape
    v = mg.tensor([[1.0], [2.0]]).var(1)  # unbiased by default, as torch: 0 / 0 is nan
    assert np.isnan(v.data).all()
    assert mg.tensor([1.0, 2.0, 3.0, 4.0]).var().item() == pytest.approx(5.0 / 3.0)
    assert mg.tensor([1.0, 2.0, 3.0, 4.0]).var(unbiased=False).item() == pytest.approx(1.25)


def test_a_0d_tensor_reduces_over_dim_0_or_minus_1():
    x = mg.tensor(3.0, requires_grad=True)
    (x.sum(0) + x.sum(-1) + x.mean(0) + x.max(-1)).backward()
    assert x.grad == 4.0
    with pytest.raises(IndexError, match="sum: dim 1 out of range for a tensor with 0 dims"):
        x.sum(1)


def test_constants_take_the_tensor_dtype():
    x = mg.randn(3)
    for y in (x + 1, 2.0 * x, x / np.float64(3.0), x - np.ones(3), np.ones(3) * x, x ** 2, 1.0 / x):
        assert y.dtype == np.float32


def test_dropout_is_seeded_inverted_and_identity_in_eval():
    x = mg.ones(1000, 10)
    mg.manual_seed(7)
    a = F.dropout(x, 0.25)
    mg.manual_seed(7)
    b = F.dropout(x, 0.25)
    np.testing.assert_array_equal(a.data, b.data)
    assert set(np.unique(a.data)) == {0.0, np.float32(1 / 0.75)}
    assert abs(a.data.mean() - 1.0) < 0.02
    assert F.dropout(x, 0.25, training=False) is x and F.dropout(x, 0.0) is x


def test_viz_names_the_ops():
    x = mg.randn(2, 3, requires_grad=True)
    w = mg.randn(4, 3)
    dot = mg.viz.to_dot(F.softmax(F.linear(x, w)).sum())
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for op in ("Linear", "Softmax", "Sum"):
        assert f'label="{op}"' in dot
    assert "(2, 3) float32" in dot and "(4, 3) float32" in dot and "filled" in dot


def test_viz_escapes_names():
    """A name holding quotes or backslashes stays inside its DOT string (it ended it early)."""
    x = mg.randn(2, 3, requires_grad=True)
    x.name = 'say "hi" \\ there'
    dot = mg.viz.to_dot(x.sum(), name="my graph")
    assert dot.startswith('digraph "my graph" {')
    assert 'label="say \\"hi\\" \\\\ there (2, 3) float32"' in dot
