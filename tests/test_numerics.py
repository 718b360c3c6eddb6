"""Numerical range (issue 8): softmax, log_softmax, cross_entropy and layer_norm on float32 inputs
of magnitude up to 1e4, against float64 NumPy formulas, on both kernel paths ("ref" and the
default fused); their gradients stay finite and correct too. And `minigrad.detect_anomaly()`,
which names the first op that produces a NaN or inf, forward or backward.

A float32 input of magnitude 1e4 is only known to about 1e-3 (its spacing), so `x - max(x)`, the
first step of every stable softmax, carries an absolute error up to ~1e-3: probabilities are
compared at rtol 2e-3, log-probabilities and losses at atol 2e-3 + rtol 1e-5 (their values reach
2e4). The float64 reference runs on the same float32 numbers, so only the computation differs.
"""
import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import kernels

SCALES = [1.0, 1e2, 1e3, 1e4]
PATHS = ["ref", "fused"]
P_TOL = dict(rtol=2e-3, atol=1e-6)     # probabilities in [0, 1]
LOG_TOL = dict(rtol=1e-5, atol=2e-3)   # log-probabilities and losses, up to ~2e4 in size


@pytest.fixture(params=PATHS)
def path(request):
    with kernels.use(request.param):
        yield request.param


def inputs(scale, shape=(6, 37), seed=0):
    """float32 logits of magnitude up to `scale`, with ties and extremes in the same row."""
    rng = np.random.default_rng(seed)
    x = (rng.uniform(-1.0, 1.0, shape) * scale).astype(np.float32)
    x[0, :] = scale            # a row of ties
    x[1, 0], x[1, 1] = scale, -scale
    return x


# ---- float64 formulas ------------------------------------------------------------------------
def softmax64(x):
    z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax64(x):
    z = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def layer_norm64(x, eps=1e-5):
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def assert_finite(*arrays):
    for a in arrays:
        assert np.isfinite(a).all(), f"non-finite values in an array of shape {a.shape}"


# ---- forward and backward at large magnitudes ------------------------------------------------
@pytest.mark.parametrize("scale", SCALES)
def test_softmax_large_inputs(path, scale):
    x = mg.tensor(inputs(scale), requires_grad=True)
    y = F.softmax(x, dim=-1)
    assert y.dtype == np.float32
    assert_finite(y.data)
    np.testing.assert_allclose(y.data, softmax64(x.data), **P_TOL)
    # d/dx sum(w * softmax(x)) = p * (w - sum(w * p))
    w = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    (y * w).sum().backward()
    p = softmax64(x.data)
    expected = p * (w - (w * p).sum(axis=-1, keepdims=True))
    assert_finite(x.grad)
    np.testing.assert_allclose(x.grad, expected, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_log_softmax_large_inputs(path, scale):
    x = mg.tensor(inputs(scale), requires_grad=True)
    y = F.log_softmax(x, dim=-1)
    assert_finite(y.data)
    np.testing.assert_allclose(y.data, log_softmax64(x.data), **LOG_TOL)
    # d/dx sum(w * log_softmax(x)) = w - softmax(x) * sum(w)
    w = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    (y * w).sum().backward()
    expected = w - softmax64(x.data) * w.sum(axis=-1, keepdims=True)
    assert_finite(x.grad)
    np.testing.assert_allclose(x.grad, expected, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_large_inputs(path, scale, label_smoothing):
    x = mg.tensor(inputs(scale), requires_grad=True)
    target = np.random.default_rng(3).integers(0, x.shape[1], x.shape[0])
    target[1] = 1  # the row's smallest logit: a loss of about 2 * scale
    target[2] = -100  # ignored
    loss = F.cross_entropy(x, target, label_smoothing=label_smoothing)
    assert_finite(loss.data)

    logp = log_softmax64(x.data)
    keep = target != -100
    K = x.shape[1]
    q = np.full(logp.shape, label_smoothing / K)  # the smoothed target distribution
    q[np.arange(len(target))[keep], target[keep]] += 1.0 - label_smoothing
    rows = -(q * logp).sum(axis=-1)
    np.testing.assert_allclose(loss.data, rows[keep].mean(), **LOG_TOL)

    loss.backward()
    expected = (softmax64(x.data) - q) * keep[:, None] / keep.sum()
    assert_finite(x.grad)
    np.testing.assert_allclose(x.grad, expected, rtol=2e-3, atol=1e-6)


def test_fully_masked_rows_are_uniform_and_nan_propagates(path):
    """A row masked everywhere with additive_mask's float32 minimum is uniform (torch's answer),
    on softmax and on attention's fused kernel; a NaN score makes its whole row NaN."""
    from minigrad.nn.attention import additive_mask
    rng = np.random.default_rng(6)
    q, k, v = (rng.standard_normal((2, 2, 5, 8)).astype(np.float32) for _ in range(3))
    mask = additive_mask(np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]))  # sequence 1: all padding
    out = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(v), attn_mask=mask).data
    np.testing.assert_allclose(out[1], np.broadcast_to(v[1].mean(axis=1, keepdims=True), out[1].shape),
                               rtol=1e-5, atol=1e-6)
    p = F.softmax(mg.tensor(rng.standard_normal((2, 2, 5, 5)).astype(np.float32)) + mask, -1).data
    np.testing.assert_allclose(p[1], 0.2, rtol=1e-6)

    x = rng.standard_normal((3, 6)).astype(np.float32)
    x[1, 2] = np.nan
    y = F.softmax(mg.tensor(x), -1).data
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()
    k[0, 0, 3, 0] = np.nan  # one key: every query of that head sees it
    out = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(v)).data
    assert np.isnan(out[0, 0]).all() and np.isfinite(out[0, 1]).all() and np.isfinite(out[1]).all()


def test_cross_entropy_minus_inf_logits_and_all_ignored(path):
    x = mg.tensor(np.array([[0.0, -np.inf, 1.0, 2.0]], np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.array([0]))
    np.testing.assert_allclose(loss.data, -log_softmax64(np.array([[0.0, -np.inf, 1.0, 2.0]]))[0, 0],
                               rtol=1e-6)
    loss.backward()
    assert np.isfinite(x.grad).all()
    x = mg.tensor(inputs(1.0), requires_grad=True)
    with np.errstate(invalid="ignore"):
        loss = F.cross_entropy(x, np.full(x.shape[0], -100))  # nothing to average: nan, as torch
        loss.backward()
    assert np.isnan(loss.data) and not x.grad.any()  # but no gradient, not nan everywhere


@pytest.mark.parametrize("scale", SCALES)
def test_layer_norm_large_inputs(path, scale):
    rng = np.random.default_rng(4)
    # a large offset too: the variance must be taken about the mean, not as E[x^2] - E[x]^2
    raw = inputs(scale, (5, 48)) + np.float32(scale)
    x = mg.tensor(raw, requires_grad=True)
    weight = mg.tensor(rng.uniform(0.5, 1.5, 48).astype(np.float32), requires_grad=True)
    bias = mg.tensor(rng.standard_normal(48).astype(np.float32), requires_grad=True)
    y = F.layer_norm(x, (48,), weight, bias)
    xhat = layer_norm64(x.data)
    assert_finite(y.data)
    np.testing.assert_allclose(y.data, xhat * weight.data + bias.data, rtol=1e-4, atol=1e-4)

    w = rng.standard_normal(x.shape).astype(np.float32)
    (y * w).sum().backward()
    # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = w * weight
    x64 = x.data.astype(np.float64)
    rstd = 1.0 / np.sqrt(x64.var(axis=-1, keepdims=True) + 1e-5)
    g = w * weight.data.astype(np.float64)
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    assert_finite(x.grad, weight.grad, bias.grad)
    np.testing.assert_allclose(x.grad, dx, rtol=1e-3, atol=1e-3 * np.abs(dx).max())
    np.testing.assert_allclose(weight.grad, (w * xhat).sum(axis=0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(bias.grad, w.sum(axis=0), rtol=1e-5, atol=1e-5)


# ---- detect_anomaly --------------------------------------------------------------------------
def test_anomaly_names_the_forward_op_and_shapes():
    x = mg.tensor(np.array([[1.0, 0.0, 2.0]], np.float32), requires_grad=True)
    y = x * 2.0  # fine
    with pytest.raises(FloatingPointError,
                       match=r"Log forward produced inf in its output \(1, 3\) from finite "
                             r"inputs of shapes \(1, 3\)"):
        with mg.detect_anomaly(), np.errstate(divide="ignore"):
            F.log(y - 2.0 * x)  # log(0)
    assert mg.function._op_hooks == []  # the hook is gone after the block, error or not


def test_anomaly_catches_overflow_and_nan():
    big = mg.tensor(np.array([100.0], np.float32))
    with pytest.raises(FloatingPointError, match=r"Exp forward produced inf"):
        with mg.detect_anomaly(), np.errstate(over="ignore"):
            F.exp(big)
    with pytest.raises(FloatingPointError, match=r"Sqrt forward produced NaN .* shapes \(1,\)"):
        with mg.detect_anomaly(), np.errstate(invalid="ignore"):
            F.sqrt(-big)
    inf = mg.tensor(np.array([np.inf], np.float32))  # an inf weight: the inputs are not finite
    with pytest.raises(FloatingPointError, match=r"Sub forward produced NaN in its output \(1,\) "
                                                 r"from inputs holding inf of shapes \(1,\), \(1,\)"):
        with mg.detect_anomaly(), np.errstate(invalid="ignore"):
            inf - inf


def test_anomaly_names_the_backward_op():
    x = mg.tensor(np.array([0.0, 4.0], np.float32), requires_grad=True)
    with mg.detect_anomaly(), np.errstate(divide="ignore"):
        y = F.sqrt(x).sum()  # forward is finite: sqrt(0) = 0
        with pytest.raises(FloatingPointError,
                           match=r"Sqrt backward produced inf in the gradient of input 0 "
                                 r"\(gradient shapes \(2,\)\)"):
            y.backward()


def test_anomaly_flags_nan_from_a_parameter():
    """A NaN no op produced (a corrupted weight) is reported at the first op that reads it."""
    from minigrad.nn import Linear

    layer = Linear(4, 3)
    layer.weight.data[1, 2] = np.nan
    with pytest.raises(FloatingPointError, match=r"Linear forward received NaN in input 1 "
                                                 r"\(input shapes \(2, 4\), \(3, 4\), \(3,\)\)"):
        with mg.detect_anomaly():
            layer(mg.randn(2, 4))


def test_anomaly_allows_minus_inf_masks_and_is_silent_when_finite():
    scores = mg.tensor(np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32),
                       requires_grad=True)
    mask = np.array([[True, True, False, False], [True, False, False, False]])
    with mg.detect_anomaly():
        probs = F.softmax(F.masked_fill(scores, ~mask, -np.inf), dim=-1)  # -inf flows on, then 0
        (probs * probs).sum().backward()
    assert np.isfinite(scores.grad).all()
    # the fused kernel's polynomial exp(-inf) is ~1e-38 rather than 0: negligible, not exact
    np.testing.assert_allclose(probs.data[~mask], 0.0, atol=1e-30)


def test_anomaly_on_a_model_step_matches_a_plain_step():
    """The hook only observes: losses and gradients are the same with and without it."""
    from minigrad.nn import LayerNorm, Linear

    def step():
        mg.manual_seed(0)
        lin, norm = Linear(8, 5), LayerNorm(5)
        x = mg.randn(3, 8)
        loss = F.cross_entropy(norm(lin(x)), np.array([0, 4, 2]))
        loss.backward()
        return loss.item(), lin.weight.grad.copy()

    plain = step()
    with mg.detect_anomaly():
        checked = step()
    assert plain[0] == checked[0]
    np.testing.assert_array_equal(plain[1], checked[1])
