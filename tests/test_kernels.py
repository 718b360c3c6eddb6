"""Fused (Numba) kernels against their NumPy references, forward and every backward output.

Shapes include 1, odd sizes and BERT-base-small's (N = 2048 rows of C = 384, attention
(2, 12, 128, 32)). Float32 inputs, because float32 is what the kernels run (float64 goes to
the references by design, which a test below checks).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from minigrad import kernels
from minigrad.kernels import (adamw, attention, cross_entropy, dropout, embedding, gelu, layernorm, matmul,
                             softmax)
from minigrad.kernels.fastmath import fast_exp

# One float32 tolerance for every comparison. The kernels sum in a different order than NumPy
# (per-row loops, blocked matmul, fastmath reassociation) and use a polynomial exp with ~5e-7
# relative error; over sums of up to a few thousand terms that moves results by a few float32
# ulps of the largest partial sum. Outputs are O(1) (inputs are standard normal), so absolute
# and relative 2e-5 leave a margin of ~10x over the worst difference seen and still catch any
# indexing or formula mistake, which shows up as O(1e-1).
RTOL = ATOL = 2e-5

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(fused, ref, scale=1.0):
    for f, r in zip(fused, ref):
        assert f.dtype == r.dtype == np.float32
        assert f.shape == r.shape
        np.testing.assert_allclose(f, r, rtol=RTOL, atol=ATOL * scale)


def both(fn, *args):
    """fn(*args) on the fused path and on the reference path."""
    with kernels.use("fused"):
        fused = fn(*args)
    with kernels.use("ref"):
        ref = fn(*args)
    return fused, ref


def test_fast_exp_relative_error():
    x = np.linspace(-80, 88, 200_001, dtype=np.float32)
    got = np.array([fast_exp(v) for v in x[::97]])
    want = np.exp(x[::97].astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 1e-6


def test_fast_exp_makes_no_subnormals():
    """Below -80 exp is exactly 0 (a subnormal costs Intel cores a microcode assist per op)."""
    assert fast_exp(np.float32(-80.5)) == 0.0 and fast_exp(np.float32(-np.inf)) == 0.0
    tiny = np.finfo(np.float32).tiny
    x = np.linspace(-120, 0, 10_001, dtype=np.float32)
    y = np.empty_like(x)
    gelu.gelu_backward_kernel(x, np.full_like(x, 1e-3), y)  # pdf * x * dy: the smallest products
    assert not np.any((y != 0) & (np.abs(y) < tiny))
    with kernels.use("fused"):  # the kernel, also in make test's MINIGRAD_KERNELS=ref pass
        s = softmax.softmax_forward(np.concatenate([[0.0], x]).astype(np.float32)[None], 1.0, None)
    assert not np.any((s != 0) & (s < tiny)) and np.all(s[0, 1:][x < -80] == 0)


@pytest.mark.parametrize("shape,mshape", [((1, 1), None), ((3, 5, 7), (5, 7)),
                                          ((2, 3, 9, 9), (2, 1, 1, 9)),
                                          ((16, 12, 128, 128), (16, 1, 1, 128))])
def test_softmax(shape, mshape):
    x, dy = randn(*shape), randn(*shape)
    mask = None if mshape is None else np.where(rng.random(mshape) < 0.3, -1e4, 0).astype(np.float32)
    y, y_ref = both(softmax.softmax_forward, x, 0.35, mask)
    close([y], [y_ref])
    dx, dx_ref = both(softmax.softmax_backward, y_ref, dy, 0.35)
    close([dx], [dx_ref])


@pytest.mark.parametrize("shape,mshape", [((1, 1), None), ((2, 3, 9, 9), (2, 1, 1, 9)),
                                          ((16, 12, 128, 128), (16, 1, 1, 128))])
def test_softmax_with_dropout(shape, mshape):
    """Softmax fused with dropout on its output: y and dropout(y) forward, and the backward from
    the gradient of dropout(y), against the reference (softmax, then dropout.py's mask)."""
    x, dy = randn(*shape), randn(*shape)
    mask = None if mshape is None else np.where(rng.random(mshape) < 0.2, -1e4, 0).astype(np.float32)
    fused, ref = both(softmax.softmax_dropout_forward, x, 0.7, mask, 0.1, 42)
    close(fused, ref)
    np.testing.assert_array_equal(fused[1] != 0, dropout.keep_mask_ref(42, shape, 0.1) & (fused[0] != 0))
    close(*both(lambda *a: [softmax.softmax_backward(*a)], ref[0], dy, 0.7, 0.1, 42))
    out = x.copy()  # the dropped output may overwrite the input
    close(softmax.softmax_dropout_forward(out, 0.7, mask, 0.1, 42, out=out), ref)


@pytest.mark.parametrize("n,c", [(1, 1), (7, 5), (3, 1001), (2048, 384)])
def test_layer_norm(n, c):
    x, dy = randn(n, c) * 2 + 1, randn(n, c)
    gamma, beta = randn(c), randn(c)
    fwd, fwd_ref = both(layernorm.layer_norm_forward, x, gamma, beta, 1e-5)
    close(fwd, fwd_ref)
    _, mean, rstd = fwd_ref
    bwd, bwd_ref = both(layernorm.layer_norm_backward, dy, x, gamma, mean, rstd)
    close(bwd, bwd_ref, scale=np.sqrt(n))        # dgamma, dbeta sum over n rows


@pytest.mark.parametrize("shape", [(1,), (7, 13), (2048, 1536)])
def test_gelu(shape):
    x, dy = randn(*shape) * 3, randn(*shape)
    y, y_ref = both(gelu.gelu_forward, x)
    close([y], [y_ref])
    dx, dx_ref = both(gelu.gelu_backward, x, dy)
    close([dx], [dx_ref])


@pytest.mark.parametrize("n,v", [(1, 1), (7, 9), (2048, 9), (64, 30522)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy(n, v, smoothing):
    logits = randn(n, v) * 3
    targets = rng.integers(0, v, n)
    targets[::3] = -100
    out, out_ref = both(cross_entropy.softmax_cross_entropy, logits, targets, -100, smoothing)
    close(out, out_ref)
    assert np.all(out[0][targets == -100] == 0) and np.all(out[1][targets == -100] == 0)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (2, 12, 128, 32)])
@pytest.mark.parametrize("masked", [False, True])
def test_attention(shape, masked):
    q, k, v, dout = (randn(*shape) for _ in range(4))
    b, _, t, d = shape
    mask = None
    if masked:
        mask = np.where(rng.random((b, 1, 1, t)) < 0.3, -1e4, 0).astype(np.float32)
        mask[..., 0] = 0
    fwd, fwd_ref = both(attention.attention_forward, q, k, v, mask, d ** -0.5)
    close(fwd, fwd_ref)
    bwd, bwd_ref = both(attention.attention_backward, dout, q, k, v, fwd_ref[1], d ** -0.5)
    close(bwd, bwd_ref)


def heads_view(b, h, t, d):
    """(B, H, T, D) as the model makes it: a view of (B, T, H*D) activations, not contiguous."""
    return randn(b, t, h * d).reshape(b, t, h, d).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("shape", [(2, 3, 33, 5), (1, 2, 77, 40), (2, 12, 128, 32)])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_fused_kernels(shape, p):
    """The fused kernels on strided head views, at sizes that leave partial register tiles
    (T not a multiple of 8 or 32), with every combination of needed gradients."""
    q, k, v, dout = (heads_view(*shape) for _ in range(4))
    b, _, t, d = shape
    mask = np.where(rng.random((b, 1, 1, t)) < 0.3, np.finfo(np.float32).min, 0).astype(np.float32)
    mask[..., 0] = 0
    fwd, fwd_ref = both(attention.attention_forward, q, k, v, mask, d ** -0.5, p, 5)
    close(fwd, fwd_ref)
    for needs in [(True, True, True), (True, False, True), (False, False, True), (True, True, False)]:
        bwd, bwd_ref = both(attention.attention_backward, dout, q, k, v, fwd_ref[1], d ** -0.5, p,
                            5, needs)
        assert [g is not None for g in bwd] == list(needs)
        close([g for g in bwd if g is not None], [g for g in bwd_ref if g is not None])
    # the fused kernels give out and the gradients in the inputs' (B, T, H, D) layout: merging
    # the heads back into (B, T, C) is then a view, not a copy (the reference makes new arrays)
    with kernels.use("fused"):
        out, probs = attention.attention_forward(q, k, v, mask, d ** -0.5, p, 5)
        grads = attention.attention_backward(dout, q, k, v, probs, d ** -0.5, p, 5)
    for a in (out, *grads):
        assert a.transpose(0, 2, 1, 3).flags.c_contiguous
    # without a backward to come (inference), no probabilities are kept, and out is the same
    with kernels.use("fused"):
        out, probs = attention.attention_forward(q, k, v, mask, d ** -0.5, p, 5, keep_probs=False)
    assert probs is None
    np.testing.assert_array_equal(out, fwd[0])


@pytest.mark.parametrize("shape", [(2, 3, 1, 33, 5), (2, 12, 1, 128, 32), (1, 2, 9, 77, 40)])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_attention_fewer_queries_than_keys(shape, p):
    """q (B, H, L, D) against k, v (B, H, S, D) with L < S (BERT's classifier attends from the
    [CLS] row only): the fused kernels against the reference, every combination of gradients."""
    b, h, lq, s, d = shape
    q, dout = heads_view(b, h, lq, d), heads_view(b, h, lq, d)
    k, v = heads_view(b, h, s, d), heads_view(b, h, s, d)
    mask = np.where(rng.random((b, 1, 1, s)) < 0.3, np.finfo(np.float32).min, 0).astype(np.float32)
    mask[..., 0] = 0
    fwd, fwd_ref = both(attention.attention_forward, q, k, v, mask, d ** -0.5, p, 5)
    assert fwd[0].shape == (b, h, lq, d) and fwd[1].shape == (b, h, lq, s)
    close(fwd, fwd_ref)
    for needs in [(True, True, True), (True, False, True), (False, True, False)]:
        bwd, bwd_ref = both(attention.attention_backward, dout, q, k, v, fwd_ref[1], d ** -0.5, p,
                            5, needs)
        close([g for g in bwd if g is not None], [g for g in bwd_ref if g is not None])
        assert [g.shape for g in bwd if g is not None] == [x.shape for x, n in zip((q, k, v), needs) if n]


def test_attention_other_masks_fall_back():
    """A mask that varies over queries (here causal) takes the BLAS + softmax path."""
    q, k, v = (randn(2, 3, 6, 4) for _ in range(3))
    causal = np.triu(np.full((6, 6), -1e4, np.float32), 1)
    fwd, fwd_ref = both(attention.attention_forward, q, k, v, causal, 0.5, 0.1, 3)
    close(fwd, fwd_ref)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (2, 12, 64, 32)])
def test_attention_with_dropout(shape):
    q, k, v, dout = (randn(*shape) for _ in range(4))
    b, h, t, d = shape
    args = (np.zeros((b, 1, 1, t), np.float32), d ** -0.5, 0.1, 1234)
    fwd, fwd_ref = both(attention.attention_forward, q, k, v, *args)
    close(fwd, fwd_ref)
    bwd, bwd_ref = both(attention.attention_backward, dout, q, k, v, fwd_ref[1], *args[1:])
    close(bwd, bwd_ref)
    # the reference spelled out with the mask: out = (probs * keep / 0.9) @ v
    keep = dropout.keep_mask_ref(1234, (b, h, t, t), 0.1)
    np.testing.assert_allclose(fwd[0], (fwd_ref[1] * keep / np.float32(0.9)) @ v, rtol=RTOL, atol=ATOL)
    # dropping with p = 0 equals no dropout
    close(attention.attention_forward(q, k, v, args[0], args[1], 0.0, 1234),
          attention.attention_forward(q, k, v, args[0], args[1]))


@pytest.mark.parametrize("ids_shape,c,v", [((1,), 1, 1), ((3, 5), 70, 4), ((16, 128), 384, 30522)])
def test_embedding_backward(ids_shape, c, v):
    """Scatter-add with repeated ids (few distinct rows, so most ids repeat), C not a multiple
    of the kernel's column strip."""
    ids = rng.integers(0, v, ids_shape)
    ids.flat[: ids.size // 2] = ids.flat[0]  # one row hit many times
    grad = randn(*ids_shape, c)
    fused, ref = both(embedding.embedding_backward, ids, grad, v)
    close([fused], [ref], scale=ids.size ** 0.5)
    # hand-worked: the repeated row holds the sum of its gradients, an unused row stays zero
    np.testing.assert_allclose(fused[ids.flat[0]], grad.reshape(-1, c)[ids.reshape(-1) == ids.flat[0]].sum(0),
                               rtol=1e-5, atol=1e-4)
    unused = np.setdiff1d(np.arange(v), ids)
    assert not fused[unused].any()


@pytest.mark.parametrize("shape", [(1,), (3, 7), (2, 3, 5, 7), (2048, 384), (16, 12, 128, 128)])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_kernel_draws_the_reference_mask(shape, p):
    """Counter-based: the kernel and the reference compute the same mask from (seed, index),
    so they agree exactly, and applying it twice (forward, then backward) uses one mask."""
    x = randn(*shape)
    fused, ref = both(dropout.dropout, x, p, 99)
    np.testing.assert_array_equal(fused, ref)
    np.testing.assert_array_equal(fused != 0, dropout.keep_mask_ref(99, shape, p) & (x != 0))
    np.testing.assert_allclose(fused[fused != 0], x[fused != 0] / np.float32(1 - p), rtol=1e-6)
    out = x.copy()
    dropout.dropout(out, p, 99, out=out)
    np.testing.assert_array_equal(out, fused)  # in place gives the same


def test_dropout_and_softmax_dropout_fill_the_out_they_are_given():
    x = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    out = np.zeros((4, 3), np.float32).T  # not contiguous
    assert dropout.dropout(x, 0.5, 7, out) is out
    np.testing.assert_array_equal(out, dropout.dropout_ref(x, 0.5, 7))
    with pytest.raises(ValueError, match=r"dropout: out \(4, 3\) is not x's shape \(3, 4\)"):
        dropout.dropout(x, 0.5, 7, np.zeros((4, 3), np.float32))
    y, yd = softmax.softmax_dropout_forward(x, 1.0, None, 0.0, 7)  # p = 0: yd is y
    np.testing.assert_array_equal(yd, y)


def test_dropout_mask_statistics():
    """Kept fraction within 5 standard errors of 1 - p for several p; masks of different seeds
    and of neighbouring elements are uncorrelated (a weak hash shows up as correlation)."""
    n = 1 << 20
    for p in (0.05, 0.1, 0.5, 0.9):
        kept = dropout.keep_mask_ref(3, (n,), p).mean()
        assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    a = dropout.keep_mask_ref(1, (n,), 0.5).astype(np.float64)
    b = dropout.keep_mask_ref(2, (n,), 0.5).astype(np.float64)
    for u, w in ((a, b), (a[1:], a[:-1]), (a[128:], a[:-128])):
        assert abs(np.corrcoef(u, w)[0, 1]) < 5 / np.sqrt(n)
    assert not dropout.keep_mask_ref(0, (n,), 1.0).any() and dropout.keep_mask_ref(0, (n,), 0.0).all()


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (9, 13, 17), (67, 130, 45), (2048, 384, 384)])
def test_matmul_numba(m, k, n):
    a, b = randn(m, k), randn(k, n)
    # entries are sums of k products of unit normals: scale the tolerance by sqrt(k)
    close([matmul.matmul_numba(a, b)], [matmul.matmul_ref(a, b)], scale=np.sqrt(k))
    c, bias = np.empty((m, n), np.float32), randn(n)
    matmul.matmul_kernel(a, b, bias, True, c)
    close([c], [gelu.gelu_forward_ref(matmul.matmul_ref(a, b) + bias)], scale=np.sqrt(k))


@pytest.mark.parametrize("g,m,k,n", [(1, 1, 1, 1), (3, 5, 130, 7), (24, 128, 32, 128)])
def test_bmm_numba(g, m, k, n):
    a, b = randn(g, m, k), randn(g, k, n)
    close([matmul.matmul_numba(a, b)], [matmul.matmul_ref(a, b)], scale=np.sqrt(k))


def test_matmul_dispatch_and_errors():
    a, b = randn(4, 6, 5), randn(4, 5, 3)
    out, ref = both(matmul.matmul, a, b)
    close([out], [ref])
    with pytest.raises(ValueError, match="inner dimensions 5 and 4 differ"):
        matmul.matmul(randn(2, 5), randn(4, 3))


@pytest.mark.parametrize("b", [False, True])
@pytest.mark.parametrize("act", [False, True])
def test_linear_forward(b, act):
    x, w = randn(2, 7, 384), randn(1536, 384) * 0.05
    bias = randn(1536) if b else None
    (y, h), (y_ref, h_ref) = both(matmul.linear_forward, x, w, bias, act)
    close([y] + ([h] if act else []), [y_ref] + ([h_ref] if act else []))
    assert (h is None) == (not act)


@pytest.mark.parametrize("shape", [(1,), (1001,), (384, 1536)])
def test_adamw(shape):
    p, g, m = randn(*shape), randn(*shape), randn(*shape) * 0.1
    v = rng.random(shape).astype(np.float32) * 0.01
    fused, ref = [x.copy() for x in (p, g, m, v)], [x.copy() for x in (p, g, m, v)]
    with kernels.use("fused"):
        adamw.adamw_update(*fused, 1e-3, 0.9, 0.999, 1e-8, 0.01, 3)
    with kernels.use("ref"):
        adamw.adamw_update(*ref, 1e-3, 0.9, 0.999, 1e-8, 0.01, 3)
    close(fused, ref)


def test_switch_routes_to_references(monkeypatch):
    """Under use("ref") every wrapper calls its reference (replaced here by a sentinel)."""
    calls = []
    for mod, name in [(softmax, "softmax_forward_ref"), (gelu, "gelu_forward_ref"),
                      (layernorm, "layer_norm_forward_ref"), (matmul, "matmul_ref"),
                      (cross_entropy, "softmax_cross_entropy_ref"),
                      (attention, "attention_forward_ref"), (adamw, "adamw_update_ref")]:
        monkeypatch.setattr(mod, name, lambda *a, _n=name: calls.append(_n) or "ref")
    x = randn(2, 3)
    before = kernels.mode()
    with kernels.use("ref"):
        assert softmax.softmax_forward(x) == "ref"
        assert gelu.gelu_forward(x) == "ref"
        assert matmul.matmul(x, x.T) == "ref"
        attention.attention_forward(*(randn(1, 1, 2, 2) for _ in range(3)), None, 1.0)
        adamw.adamw_update(x, x, x, x, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1)
    assert kernels.mode() == before
    assert calls == ["softmax_forward_ref", "gelu_forward_ref", "matmul_ref",
                     "attention_forward_ref", "adamw_update_ref"]


def test_float64_runs_the_reference():
    """float64 (gradient checks) is routed to the reference and keeps its dtype."""
    x = rng.standard_normal((3, 5))
    np.testing.assert_array_equal(softmax.softmax_forward(x, 0.5), softmax.softmax_forward_ref(x, 0.5))
    assert gelu.gelu_forward(x).dtype == np.float64


def test_kernels_run_without_jit():
    """NUMBA_DISABLE_JIT=1 runs the kernels as Python, for stepping through them."""
    code = (
        "import numpy as np\n"
        "from minigrad.kernels import softmax, layernorm, gelu, cross_entropy, attention, matmul\n"
        "r = np.random.default_rng(0); x = r.standard_normal((3, 5)).astype(np.float32)\n"
        "assert np.allclose(softmax.softmax_forward(x, 0.5), softmax.softmax_forward_ref(x, 0.5), atol=1e-5)\n"
        "assert np.allclose(gelu.gelu_backward(x, x), gelu.gelu_backward_ref(x, x), atol=1e-5)\n"
        "g = np.ones(5, np.float32)\n"
        "for a, b in zip(layernorm.layer_norm_backward(x, x, g, x.mean(1), np.ones(3, np.float32)),\n"
        "                layernorm.layer_norm_backward_ref(x, x, g, x.mean(1), np.ones(3, np.float32))):\n"
        "    assert np.allclose(a, b, atol=1e-5)\n"
        "l, d = cross_entropy.softmax_cross_entropy(x, np.array([0, -100, 4]))\n"
        "assert np.allclose(d, cross_entropy.softmax_cross_entropy_ref(x, np.array([0, -100, 4]))[1], atol=1e-5)\n"
        "q = r.standard_normal((1, 2, 3, 2)).astype(np.float32)\n"
        "assert np.allclose(attention.attention_forward(q, q, q, None, 0.7)[0],\n"
        "                   attention.attention_forward_ref(q, q, q, None, 0.7)[0], atol=1e-5)\n"
        "assert np.allclose(matmul.matmul_numba(x, x.T), x @ x.T, atol=1e-5)\n"
        "from minigrad.kernels import dropout\n"
        "assert np.array_equal(dropout.dropout(x, 0.3, 5), dropout.dropout_ref(x, 0.3, 5))\n"
        "import numba; assert numba.config.DISABLE_JIT\n"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", MINIGRAD_KERNELS="fused")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr


def test_kernel_caches_share_one_stamp(tmp_path):
    """Numba would keep attention.py's cached kernels after an edit of matmul.py, whose
    micro-kernel and tile size they compile in; each kernel's cache stamp carries a digest of
    the whole folder instead, so a change to any kernel file recompiles them all."""
    from minigrad.kernels import cache
    locator = attention.attention_forward_kernel._cache._impl.locator
    assert isinstance(locator, cache._PackageStampLocator)
    assert locator.get_source_stamp()[1] == cache.sources_digest()
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text("x = 1\n")
    before = cache.sources_digest(tmp_path)
    (tmp_path / "b.py").write_text("x = 2\n")
    assert cache.sources_digest(tmp_path) != before
    # functions outside the folder keep Numba's own locator
    assert cache._PackageStampLocator.from_function(randn, __file__) is None


def test_thread_setting():
    n = kernels.get_num_threads()
    kernels.set_num_threads(1)
    try:
        assert kernels.get_num_threads() == 1
    finally:
        kernels.set_num_threads(n)


@pytest.mark.parametrize("n,m,r", [(1, 1, 1), (1, 7, 3), (37, 129, 5), (2048, 384, 8)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_lora_update(n, m, r, with_bias):
    """The fused rank-r update in place, as LoRA's forward calls it (b = lora_B (M, r)) and as
    its backward does (b = lora_A^T, a transposed view)."""
    h, t, bias = randn(n, m), randn(n, r), randn(m) if with_bias else None
    for b in (randn(m, r), randn(r, m).T):
        fused, ref = h.copy(), h.copy()
        with kernels.use("fused"):
            out = matmul.lora_update(fused, t, b, bias)
        assert out is fused  # in place
        matmul.lora_update_ref(ref, t, b, bias)
        assert not np.allclose(ref, h)  # the update does something
        close([fused], [ref], scale=np.sqrt(r))
    with pytest.raises(ValueError, match=r"lora_update: .* expected h \(N, M\), t \(N, r\)"):
        matmul.lora_update(h, t, randn(m + 1, r))


@pytest.mark.parametrize("n,c", [(1, 1), (7, 5), (3, 1001), (2048, 384)])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_dropout_add_layer_norm(n, c, p):
    """Dropout, residual add and layer norm in one kernel, forward (y, s, mean, rstd) and
    backward (dx, dresidual, dgamma, dbeta), against the reference (dropout_ref, then layer
    norm's references)."""
    x, residual, dy = randn(n, c), randn(n, c) * 2 + 1, randn(n, c)
    gamma, beta = randn(c), randn(c)
    fwd, fwd_ref = both(layernorm.dropout_add_layer_norm_forward, x, residual, gamma, beta, p, 7, 1e-5)
    close(fwd, fwd_ref)
    _, s, mean, rstd = fwd_ref
    bwd, bwd_ref = both(layernorm.dropout_add_layer_norm_backward, dy, s, gamma, mean, rstd, p, 7)
    # dx = rstd * (...): on a constant row (C = 1) rstd is 1/sqrt(eps) ~ 316 and multiplies the
    # rounding error of dy * gamma - mean(dy * gamma), whose exact value is 0
    close(bwd[:2], bwd_ref[:2], scale=max(1.0, rstd.max()))
    close(bwd[2:], bwd_ref[2:], scale=np.sqrt(n))  # dgamma, dbeta sum over n rows


@pytest.mark.parametrize("shape", [(1, 1), (2, 3, 5), (2048, 384)])
def test_dropout_add_layer_norm_draws_the_dropout_mask(shape):
    """The fused kernel's dropout is `dropout.dropout`'s, bit for bit, for the same seed: with a
    zero residual, s is dropout(x); in the backward, dx is dropout(dresidual)."""
    x, dy = randn(*shape), randn(*shape)
    gamma, beta = randn(shape[-1]), randn(shape[-1])
    with kernels.use("fused"):
        _, s, mean, rstd = layernorm.dropout_add_layer_norm_forward(
            x, np.zeros_like(x), gamma, beta, 0.1, 99, 1e-5)
        np.testing.assert_array_equal(s, dropout.dropout(x, 0.1, 99))
        np.testing.assert_array_equal(s != 0, dropout.keep_mask_ref(99, shape, 0.1) & (x != 0))
        dx, dresidual, _, _ = layernorm.dropout_add_layer_norm_backward(dy, s, gamma, mean, rstd, 0.1, 99)
        np.testing.assert_array_equal(dx, dropout.dropout(dresidual, 0.1, 99))
    if x.size > 100:
        assert 0.05 < (s == 0).mean() < 0.15  # something was dropped
