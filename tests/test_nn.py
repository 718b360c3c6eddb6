"""Tests of minigrad.nn: how modules register and name their weights, save and load them,
switch modes and freeze; each layer against a PyTorch composition (forward and every gradient,
float64 and float32); float64 gradcheck of a whole encoder layer; seeded initialisation; and the
errors a wrong input raises.

Shapes: B batch, T tokens, C width, H heads, D head size, F feed-forward width, V vocab.
"""
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import nn
from minigrad.nn import init
from minigrad.testing import gradcheck

# float64 differs from torch only by summation order. float32 differs by that, times the
# fused kernels' fast erf/exp approximations and BLAS blocking, over a few layers.
TOL = {np.float64: dict(rtol=1e-9, atol=1e-10), np.float32: dict(rtol=2e-4, atol=2e-5)}
# Exception: float64 GELU runs the NumPy reference, whose erf is Abramowitz & Stegun 7.1.26
# (|error| < 1.5e-7, chosen for float32), so anything through a GELU is that far from torch.
GELU_TOL64 = dict(rtol=1e-6, atol=5e-7)
DTYPES = [np.float64, np.float32]


def to_dtype(module, dtype):
    """Cast every parameter of a module in place (the layers are built float32)."""
    for p in module.parameters():
        p.data = p.data.astype(dtype)
    return module


def torch_params(module):
    """The module's parameters as torch leaves, keyed by their state_dict names."""
    import torch
    return {k: torch.tensor(v, requires_grad=True) for k, v in module.state_dict().items()}


def compare(module, torch_fn, x, *args, dtype, x_is_ids=False, tol=None):
    """Run module(x, *args) and torch_fn(params, x) on the same weights; compare the output and
    the gradients of every parameter (and of x when it is a float input) under a random
    projection of the output, so every output element counts. tol defaults to TOL[dtype]."""
    import torch
    tol = tol or TOL[dtype]
    P = torch_params(module)
    xm = x if x_is_ids else mg.Tensor(x, requires_grad=True)
    xt = torch.tensor(x) if x_is_ids else torch.tensor(x, requires_grad=True)
    y = module(xm, *args)
    yt = torch_fn(P, xt)
    assert y.dtype == dtype
    np.testing.assert_allclose(y.data, yt.detach().numpy(), **tol)

    r = np.random.default_rng(1).standard_normal(y.shape).astype(dtype)
    y.backward(r)
    (yt * torch.tensor(r)).sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.dtype == dtype, name
        np.testing.assert_allclose(p.grad, P[name].grad.numpy(), err_msg=name, **tol)
    if not x_is_ids:
        assert xm.grad.dtype == dtype
        np.testing.assert_allclose(xm.grad, xt.grad.numpy(), **tol)


# ---- registration, state, modes -------------------------------------------------------
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(3, np.float32))
        self.proj = nn.Linear(3, 4)
        self.layer = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2, bias=False)])
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        x = self.proj(x * self.scale)
        for lin in self.layer:
            x = lin(x)
        return self.drop(x)


def test_named_parameters_order_and_dotted_names():
    m = Block()
    assert [n for n, _ in m.named_parameters()] == [
        "scale", "proj.weight", "proj.bias", "layer.0.weight", "layer.0.bias", "layer.1.weight"]
    assert [n for n, _ in m.named_modules()] == ["", "proj", "layer", "layer.0", "layer.1", "drop"]
    assert m.get_submodule("layer.1") is m.layer[1]
    assert m.layer[1].weight.shape == (2, 4)  # (out, in), PyTorch's layout
    assert m.num_parameters() == 3 + 12 + 4 + 16 + 4 + 8


def test_reassigning_and_sharing_parameters():
    m = Block()
    m.proj = nn.Tanh()  # replacing a Linear drops its parameters
    assert "proj.weight" not in dict(m.named_parameters())
    m.layer[1].weight = m.layer[0].weight  # tied weights: one tensor, listed once
    assert len(m.parameters()) == len({id(p) for p in m.parameters()}) == 3


def test_shared_module_is_listed_once_and_slices_keep_their_kind():
    """As torch: named_modules lists a module reachable twice under its first name (so LoRA,
    like PEFT, wraps it once); a slice of a Sequential is a Sequential that runs."""
    shared, middle = nn.Linear(4, 4), nn.Linear(4, 4)
    seq = nn.Sequential(shared, middle, shared)
    assert [name for name, _ in seq.named_modules()] == ["", "0", "1"]
    head = seq[0:2]
    assert type(head) is nn.Sequential and list(head) == [shared, middle]
    x = mg.Tensor(np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(head(x).data, middle(shared(x)).data)
    assert type(nn.ModuleList([shared, middle])[1:]) is nn.ModuleList
    assert seq[-1] is shared


def test_replacing_a_child_or_parameter_keeps_its_place():
    """As in torch: a reassigned name stays where it was, so a Sequential still runs in order."""
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = mg.randn(5, 3)
    setattr(seq, "0", nn.Linear(3, 4))
    assert list(seq._modules) == ["0", "1", "2"]
    np.testing.assert_array_equal(seq(x).data, seq[2](seq[1](seq[0](x))).data)
    m = Block()
    m.scale = nn.Parameter(np.zeros(3, np.float32))
    assert [n for n, _ in m.named_parameters()][:2] == ["scale", "proj.weight"]


def test_a_non_parameter_over_a_weight_or_a_non_module_in_a_list_is_refused():
    """torch's rules: otherwise the weight leaves state_dict, or Sequential skips the function."""
    m = Block()
    with pytest.raises(TypeError, match=r"Block: cannot assign Tensor as parameter 'scale' "
                                        r"\(Parameter or None expected\)"):
        m.scale = mg.zeros(3)
    with pytest.raises(TypeError, match=r"Block: cannot assign int as child module 'proj'"):
        m.proj = 3
    assert "scale" in dict(m.named_parameters()) and "proj.weight" in m.state_dict()
    m.proj = None  # None unregisters, as in torch
    assert "proj.weight" not in m.state_dict()
    with pytest.raises(TypeError, match=r"Sequential: item 1 has type function, not a Module"):
        nn.Sequential(nn.Linear(3, 4), mg.functional.relu)
    with pytest.raises(TypeError, match=r"ModuleList: item 0 has type int, not a Module"):
        nn.ModuleList([5])


def test_module_needs_super_init():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match=r"Broken: call super\(\).__init__\(\)"):
        Broken()


def test_state_dict_round_trip_copies_values():
    a, b = Block().eval(), Block().eval()
    x = mg.randn(5, 3)
    assert not np.allclose(a(x).data, b(x).data)
    state = {k: v.copy() for k, v in a.state_dict().items()}
    assert b.load_state_dict(state) == ([], [])
    np.testing.assert_array_equal(a(x).data, b(x).data)
    state["proj.bias"][:] = 7  # loading copied the array; the checkpoint does not alias the model
    assert not (b.proj.bias.data == 7).any()


def test_load_state_dict_reports_missing_and_unexpected():
    m = Block()
    state = dict(m.state_dict())
    del state["layer.0.bias"]
    state["layer.2.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(KeyError, match=r"missing keys \['layer.0.bias'\].*unexpected keys "
                                       r"\['layer.2.weight'\]"):
        m.load_state_dict(state)
    assert m.load_state_dict(state, strict=False) == (["layer.0.bias"], ["layer.2.weight"])


def test_load_state_dict_shape_mismatch_names_the_key():
    m = Block()
    state = dict(m.state_dict(), **{"layer.0.weight": np.zeros((4, 5), np.float32)})
    before = m.layer[0].weight.data.copy()
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"layer.0.weight: checkpoint \(4, 5\) vs model "
                                             r"\(4, 4\)"):
            m.load_state_dict(state, strict=strict)
    np.testing.assert_array_equal(m.layer[0].weight.data, before)  # nothing half-loaded


def test_train_eval_propagates_and_switches_dropout():
    m = Block()
    assert all(mod.training for mod in m.modules())
    x = mg.ones(200, 3)
    assert (m(x).data == 0).any()  # training: dropout zeroes some outputs
    m.eval()
    assert not any(mod.training for mod in m.modules())
    np.testing.assert_array_equal(m(x).data, m(x).data)  # eval: deterministic
    assert not (m(x).data == 0).all()
    m.train()
    assert m.layer[0].training and m.drop.training


def test_requires_grad_false_freezes_and_skips_the_work():
    m = Block()
    m.proj.requires_grad_(False)
    x = mg.randn(4, 3, requires_grad=True)
    m(x).sum().backward()
    assert m.proj.weight.grad is None and m.proj.bias.grad is None
    assert m.layer[0].weight.grad is not None and x.grad is not None
    assert m.num_parameters(trainable_only=True) == m.num_parameters() - 16

    # a frozen encoder under a trainable head builds no graph at all: its output is a leaf
    enc = nn.TransformerEncoderLayer(8, 2, 16).requires_grad_(False)
    head = nn.Linear(8, 3)
    h = enc(mg.randn(2, 5, 8))
    assert not h.requires_grad and h.is_leaf
    head(h).sum().backward()
    assert all(p.grad is None for p in enc.parameters()) and head.weight.grad is not None


def test_zero_grad():
    m = Block()
    m(mg.randn(4, 3)).sum().backward()
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_sequential_applies_in_order():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = mg.randn(5, 3)
    np.testing.assert_array_equal(seq(x).data, seq[2](seq[1](seq[0](x))).data)
    assert [n for n, _ in seq.named_parameters()][:2] == ["0.weight", "0.bias"]


# ---- each layer against torch -----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    lin = nn.Linear(6, 5, dtype=dtype)
    x = np.random.default_rng(0).standard_normal((2, 3, 6)).astype(dtype)
    compare(lin, lambda P, x: torch.nn.functional.linear(x, P["weight"], P["bias"]), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    emb = nn.Embedding(7, 4, dtype=dtype)
    ids = np.array([[0, 3, 3, 6], [6, 1, 3, 0]])  # repeated ids: their gradients must add up
    compare(emb, lambda P, i: torch.nn.functional.embedding(i, P["weight"]), ids, dtype=dtype,
            x_is_ids=True)


def test_embedding_padding_row_gets_no_gradient():
    emb = nn.Embedding(5, 3, padding_idx=0)
    assert not emb.weight.data[0].any()
    emb(np.array([0, 1, 0])).sum().backward()
    assert not emb.weight.grad[0].any() and (emb.weight.grad[1] == 1).all()


def test_load_state_dict_takes_tensors_or_arrays():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict({k: mg.tensor(v) for k, v in a.state_dict().items()})
    assert all((b.state_dict()[k] == v).all() for k, v in a.state_dict().items())


def test_layernorm_takes_its_width_as_torch_does():
    """An int or a one-axis shape, (C,) or [C], as torch.nn.LayerNorm accepts."""
    for shape in (4, (4,), [4]):
        assert nn.LayerNorm(shape).weight.shape == (4,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    ln = nn.LayerNorm(7, eps=1e-6, dtype=dtype)
    rng = np.random.default_rng(0)
    ln.weight.data[:] = rng.standard_normal(7)  # not 1 and 0, so a swapped gain/bias shows
    ln.bias.data[:] = rng.standard_normal(7)
    x = (3 + 2 * rng.standard_normal((2, 3, 7))).astype(dtype)
    compare(ln, lambda P, x: torch.nn.functional.layer_norm(x, (7,), P["weight"], P["bias"], 1e-6),
            x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(dtype, approximate):
    torch = pytest.importorskip("torch")
    x = (3 * np.random.default_rng(0).standard_normal((4, 33))).astype(dtype)
    exact64 = dtype == np.float64 and approximate == "none"
    compare(nn.GELU(approximate), lambda P, x: torch.nn.functional.gelu(x, approximate=approximate),
            x, dtype=dtype, tol=GELU_TOL64 if exact64 else None)


def torch_attention(P, x, mask, H, prefix=""):
    """Multi-head self-attention written out in torch ops, one line per step of the paper."""
    import torch

    def lin(name, x):
        return x @ P[f"{prefix}{name}.weight"].T + P[f"{prefix}{name}.bias"]

    B, T, C = x.shape
    D = C // H
    q, k, v = (lin(n, x).reshape(B, T, H, D).transpose(1, 2) for n in ("query", "key", "value"))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D) + torch.tensor(mask)  # (B, H, T, T)
    ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    return lin("out", ctx)


def torch_encoder_layer(P, x, mask, H, norm_first, eps):
    import torch
    C = x.shape[-1]

    def ln(name, x):
        return torch.nn.functional.layer_norm(x, (C,), P[f"{name}.weight"], P[f"{name}.bias"], eps)

    def ffn(x):
        h = torch.nn.functional.gelu(x @ P["ffn_in.weight"].T + P["ffn_in.bias"])
        return h @ P["ffn_out.weight"].T + P["ffn_out.bias"]

    def attn(x):
        return torch_attention(P, x, mask, H, prefix="attn.")

    if norm_first:
        x = x + attn(ln("norm1", x))
        return x + ffn(ln("norm2", x))
    x = ln("norm1", x + attn(x))
    return ln("norm2", x + ffn(x))


def padded_batch(dtype, B=2, T=5, C=8):
    """x (B, T, C) and an additive mask hiding the last two tokens of the first sequence."""
    x = np.random.default_rng(0).standard_normal((B, T, C)).astype(dtype)
    lengths = np.array([T - 2] + [T] * (B - 1))
    return x, nn.additive_mask(np.arange(T)[None, :] < lengths[:, None], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_with_padding_mask_matches_torch(dtype):
    pytest.importorskip("torch")
    attn = to_dtype(nn.MultiHeadSelfAttention(8, 2), dtype)
    x, mask = padded_batch(dtype)
    compare(attn, lambda P, x: torch_attention(P, x, mask, 2), x, mask, dtype=dtype)


def test_attention_mask_hides_padding():
    attn = nn.MultiHeadSelfAttention(8, 2).eval()
    x, mask = padded_batch(np.float32)
    y = attn(mg.Tensor(x), mask).data
    x[0, 3:] = 100.0  # whatever the padding holds, the real tokens do not see it
    np.testing.assert_allclose(attn(mg.Tensor(x), mask).data[0, :3], y[0, :3], rtol=1e-5, atol=1e-6)


def test_attention_dropout_drops_probabilities_not_outputs():
    """As torch's MultiheadAttention(dropout=p): with every value vector all ones and the output
    projection the identity, a head's output row is the sum of its kept, rescaled probabilities,
    one number repeated over the head's D columns (an output dropout would zero single columns);
    eval mode drops nothing."""
    mg.manual_seed(0)
    attn = nn.MultiHeadSelfAttention(8, 2, dropout=0.5)
    attn.value.weight.data[:] = 0.0
    attn.value.bias.data[:] = 1.0
    attn.out.weight.data[:] = np.eye(8, dtype=np.float32)
    attn.out.bias.data[:] = 0.0
    x = mg.Tensor(np.random.default_rng(0).standard_normal((2, 6, 8)).astype(np.float32))
    y = attn(x).data.reshape(2, 6, 2, 4)  # (B, T, H, D)
    np.testing.assert_allclose(y, np.broadcast_to(y[..., :1], y.shape), rtol=1e-6)
    assert np.abs(y - 1.0).max() > 0.1  # some probabilities were dropped
    np.testing.assert_allclose(attn.eval()(x).data, 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_encoder_layer_matches_torch(dtype, norm_first):
    pytest.importorskip("torch")
    layer = to_dtype(nn.TransformerEncoderLayer(8, 2, 16, eps=1e-6, norm_first=norm_first), dtype)
    rng = np.random.default_rng(0)
    for ln in (layer.norm1, layer.norm2):  # non-trivial gains and shifts
        ln.weight.data[:] = 1 + 0.3 * rng.standard_normal(8)
        ln.bias.data[:] = 0.3 * rng.standard_normal(8)
    x, mask = padded_batch(dtype)
    compare(layer, lambda P, x: torch_encoder_layer(P, x, mask, 2, norm_first, 1e-6), x, mask,
            dtype=dtype, tol=GELU_TOL64 if dtype == np.float64 else None)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "pre-LN"])
def test_encoder_layer_gradcheck(norm_first):
    layer = to_dtype(nn.TransformerEncoderLayer(4, 2, 8, norm_first=norm_first), np.float64)
    x, mask = padded_batch(np.float64, B=2, T=3, C=4)
    x = mg.Tensor(x, requires_grad=True)
    params = layer.parameters()
    assert gradcheck(lambda x, *ps: layer(x, mask), [x, *params])


# ---- initialisation -----------------------------------------------------------------------
def test_manual_seed_makes_init_reproducible():
    def weights(seed):
        mg.manual_seed(seed)
        return nn.TransformerEncoderLayer(8, 2, 16).state_dict()

    a, b, c = weights(3), weights(3), weights(4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["attn.query.weight"], c["attn.query.weight"])


def test_init_bounds_and_std():
    fan_out, fan_in = 600, 400
    w = mg.zeros(fan_out, fan_in, dtype=np.float64)  # 240,000 draws: std within ~0.3% (5 sigma)

    def check_uniform(bound):
        assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.999 * bound
        assert w.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
        assert abs(w.data.mean()) < 0.01 * bound

    init.kaiming_uniform_(w, nonlinearity="relu")
    check_uniform(math.sqrt(2) * math.sqrt(3 / fan_in))
    init.kaiming_uniform_(w, a=math.sqrt(5))  # Linear's default = U(-1/sqrt(fan_in), ...)
    check_uniform(1 / math.sqrt(fan_in))
    init.xavier_uniform_(w, gain=2.0)
    check_uniform(2.0 * math.sqrt(6 / (fan_in + fan_out)))

    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert w.data.std() == pytest.approx(math.sqrt(2 / fan_out), rel=0.01)
    init.xavier_normal_(w)
    assert w.data.std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.01)
    init.normal_(w, 1.0, 0.02)
    assert w.data.mean() == pytest.approx(1.0, abs=1e-3)
    assert w.data.std() == pytest.approx(0.02, rel=0.01)


def test_linear_default_init_is_torchs():
    lin = nn.Linear(300, 200)
    bound = 1 / math.sqrt(300)
    for p in (lin.weight, lin.bias):
        assert p.dtype == np.float32 and np.abs(p.data).max() <= bound
    assert lin.weight.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


# ---- errors -------------------------------------------------------------------------------
def ints(*shape, dtype=np.int64):
    return mg.Tensor(np.zeros(shape, dtype))


# (what goes wrong, the call, the exception, what its message must say): one line per case.
ERRORS = [
    ("Linear width", lambda: nn.Linear(4, 3)(mg.zeros(2, 5)),
     ValueError, r"Linear: input shape \(2, 5\) does not end in 4 features"),
    ("Linear int", lambda: nn.Linear(4, 3)(ints(2, 4)),
     TypeError, r"Linear: expected a float tensor, got int64 with shape \(2, 4\)"),
    ("Linear ndarray", lambda: nn.Linear(4, 3)(np.zeros((2, 4), np.float32)),
     TypeError, r"Linear: expected a Tensor input, got ndarray"),
    ("Linear float64", lambda: nn.Linear(4, 3)(mg.zeros(2, 4, dtype=np.float64)),
     TypeError, r"linear: input float64 \(2, 4\) and weight float32 \(3, 4\) differ in dtype"),
    ("Embedding float ids", lambda: nn.Embedding(10, 4)(mg.zeros(2, 3)),
     TypeError, r"Embedding: ids must be integers, got float32 with shape \(2, 3\)"),
    ("Embedding id too big", lambda: nn.Embedding(10, 4)(np.array([[0, 10]])),
     IndexError, r"Embedding: ids must lie in \[0, 10\), got values in \[0, 10\] "
                 r"\(shape \(1, 2\)\)"),
    ("Embedding negative id", lambda: nn.Embedding(10, 4)(np.array([2, -1])),
     IndexError, r"Embedding: ids must lie in \[0, 10\), got values in \[-1, 2\]"),
    ("LayerNorm width", lambda: nn.LayerNorm(4)(mg.zeros(2, 3, 5)),
     ValueError, r"LayerNorm: input shape \(2, 3, 5\) does not end in 4 features"),
    ("LayerNorm int", lambda: nn.LayerNorm(4)(ints(2, 4, dtype=np.int32)),
     TypeError, r"LayerNorm: expected a float tensor, got int32"),
    ("LayerNorm shape", lambda: nn.LayerNorm((3, 4)),
     ValueError, r"LayerNorm: normalized_shape \(3, 4\) has 2 axes; only the last axis"),
    ("Embedding padding_idx", lambda: nn.Embedding(10, 4, padding_idx=10),
     ValueError, r"Embedding: padding_idx 10 is outside the table of 10 rows"),
    ("Dropout p", lambda: nn.Dropout(1.5),
     ValueError, r"Dropout: p must be in \[0, 1\), got 1.5"),
    ("GELU int", lambda: nn.GELU()(ints(3)),
     TypeError, r"GELU: expected a float tensor, got int64 with shape \(3,\)"),
    ("attention heads", lambda: nn.MultiHeadSelfAttention(10, 4),
     ValueError, r"MultiHeadSelfAttention: hidden_size 10 is not divisible by num_heads 4"),
    ("attention width", lambda: nn.MultiHeadSelfAttention(8, 2)(mg.zeros(2, 5, 6)),
     ValueError, r"MultiHeadSelfAttention: input shape \(2, 5, 6\) does not end in 8"),
    ("attention 2-D", lambda: nn.MultiHeadSelfAttention(8, 2)(mg.zeros(5, 8)),
     ValueError, r"MultiHeadSelfAttention: expected x of shape \(B, T, C\), got \(5, 8\)"),
    ("attention mask", lambda: nn.MultiHeadSelfAttention(8, 2)(mg.zeros(2, 5, 8), np.zeros((2, 4))),
     ValueError, r"MultiHeadSelfAttention: .*mask \(2, 4\) does not broadcast to \(B, H, L, S\) "
                 r"= \(2, 2, 5, 5\)"),
    ("post-LN width", lambda: nn.TransformerEncoderLayer(8, 2, 16)(mg.zeros(2, 5, 6)),
     ValueError, r"TransformerEncoderLayer: input shape \(2, 5, 6\) does not end in 8"),
    ("pre-LN width", lambda: nn.TransformerEncoderLayer(8, 2, 16, norm_first=True)(mg.zeros(2, 5, 6)),
     ValueError, r"TransformerEncoderLayer: input shape \(2, 5, 6\) does not end in 8"),
    ("encoder int", lambda: nn.TransformerEncoderLayer(8, 2, 16)(ints(2, 5, 8)),
     TypeError, r"TransformerEncoderLayer: expected a float tensor, got int64"),
    ("init 1-D", lambda: init.xavier_uniform_(mg.zeros(5)),
     ValueError, r"init: fan in/out need at least 2 dimensions, got shape \(5,\)"),
]


@pytest.mark.parametrize("call, exc, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_module_and_shapes(call, exc, message):
    with pytest.raises(exc, match=message):
        call()
