"""Every op against PyTorch: forward values and input gradients on random float64 inputs.

Each case is (minigrad fn, torch fn, input shapes); an input shape written ("+", shape) is
drawn positive (for log, sqrt, pow, div). Skipped when torch is not installed.
"""
import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

IDS = np.array([[0, 2, 1], [3, 3, -100]])
MASK = np.where(np.random.default_rng(5).random((2, 1, 1, 4)) < 0.3, -1e9, 0.0)
MASK[..., 0] = 0.0

CASES = {
    "add": (F.add, torch.add, [(2, 3), (3,)]),
    "sub": (F.sub, torch.sub, [(2, 1), (1, 4)]),
    "mul": (F.mul, torch.mul, [(2, 3, 1), (3, 4)]),
    "div": (F.div, torch.div, [(2, 3), ("+", (3,))]),
    "neg": (F.neg, torch.neg, [(3,)]),
    "pow": (F.pow, torch.pow, [("+", (2, 3)), (3,)]),
    "pow_const": (lambda a: a ** 3, lambda a: a ** 3, [(4,)]),
    "exp": (F.exp, torch.exp, [(2, 3)]),
    "log": (F.log, torch.log, [("+", (2, 3))]),
    "sqrt": (F.sqrt, torch.sqrt, [("+", (5,))]),
    "tanh": (F.tanh, torch.tanh, [(2, 3)]),
    "sigmoid": (F.sigmoid, torch.sigmoid, [(2, 3)]),
    "relu": (F.relu, torch.relu, [(3, 4)]),
    "gelu": (F.gelu, TF.gelu, [(3, 4)]),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: TF.gelu(x, approximate="tanh"), [(7,)]),
    "maximum": (F.maximum, torch.maximum, [(2, 3), (3,)]),
    "minimum": (F.minimum, torch.minimum, [(2, 1), (1, 3)]),
    "clip": (lambda x: F.clip(x, -0.5, 0.5), lambda x: torch.clamp(x, -0.5, 0.5), [(4, 3)]),
    "abs": (F.abs, torch.abs, [(3, 3)]),
    "where": (lambda a, b: F.where(a.data > 0, a, b), lambda a, b: torch.where(a > 0, a, b), [(2, 3), (3,)]),
    "masked_fill": (lambda x: F.masked_fill(x, x.data > 0.5, -2.0),
                    lambda x: x.masked_fill(x > 0.5, -2.0), [(3, 4)]),
    "sum": (lambda x: x.sum((0, 2)), lambda x: x.sum((0, 2)), [(2, 3, 4)]),
    "mean": (lambda x: x.mean(1, keepdim=True), lambda x: x.mean(1, keepdim=True), [(2, 3, 4)]),
    "max": (lambda x: x.max(-1), lambda x: x.amax(-1), [(3, 5)]),
    "max_all": (F.max, torch.amax, [(3, 5)]),
    "var": (lambda x: x.var(1), lambda x: x.var(1), [(3, 5)]),
    "var_biased": (lambda x: x.var(unbiased=False), lambda x: x.var(unbiased=False), [(3, 5)]),
    "logsumexp": (lambda x: F.logsumexp(x, 1), lambda x: torch.logsumexp(x, 1), [(2, 4, 3)]),
    "reshape": (lambda x: x.reshape(3, -1), lambda x: x.reshape(3, -1), [(2, 3, 2)]),
    "transpose": (lambda x: F.transpose(x, 0, 2), lambda x: x.transpose(0, 2), [(2, 3, 4)]),
    "permute": (lambda x: x.permute(1, 2, 0), lambda x: x.permute(1, 2, 0), [(2, 3, 4)]),
    "expand": (lambda x: x.expand(2, 3, 4), lambda x: x.expand(2, 3, 4), [(3, 1)]),
    "squeeze": (lambda x: F.squeeze(x, 0), lambda x: x.squeeze(0), [(1, 3, 1)]),
    "unsqueeze": (lambda x: F.unsqueeze(x, -2), lambda x: x.unsqueeze(-2), [(2, 3)]),
    "getitem": (lambda x: x[1:, [0, 2, 2]], lambda x: x[1:, [0, 2, 2]], [(3, 4)]),
    "gather": (lambda x: F.gather(x, 1, np.array([[0, 0], [2, 1]])),
               lambda x: torch.gather(x, 1, torch.tensor([[0, 0], [2, 1]])), [(2, 3)]),
    "cat": (lambda a, b: F.cat([a, b], 1), lambda a, b: torch.cat([a, b], 1), [(2, 3), (2, 2)]),
    "stack": (lambda a, b: F.stack([a, b], 1), lambda a, b: torch.stack([a, b], 1), [(2, 3), (2, 3)]),
    "split": (lambda x: F.split(x, 2, 1)[2], lambda x: torch.split(x, 2, 1)[2], [(2, 5)]),
    "matmul": (F.matmul, torch.matmul, [(2, 1, 3, 4), (3, 4, 2)]),
    "matmul_vec": (F.matmul, torch.matmul, [(4,), (2, 4, 3)]),
    "linear": (F.linear, TF.linear, [(2, 3, 4), (5, 4), (5,)]),
    "linear_gelu": (lambda x, w, b: F.linear(x, w, b, gelu=True), lambda x, w, b: TF.gelu(TF.linear(x, w, b)),
                    [(3, 4), (5, 4), (5,)]),
    "softmax": (lambda x: F.softmax(x, 1), lambda x: torch.softmax(x, 1), [(2, 4, 3)]),
    "log_softmax": (F.log_softmax, lambda x: torch.log_softmax(x, -1), [(3, 5)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, 4, w, b), lambda x, w, b: TF.layer_norm(x, (4,), w, b),
                   [(2, 3, 4), (4,), (4,)]),
    "embedding": (lambda w: F.embedding(np.abs(IDS) % 4, w),
                  lambda w: TF.embedding(torch.tensor(np.abs(IDS) % 4), w), [(4, 3)]),
    "embedding_padding_idx": (lambda w: F.embedding(np.abs(IDS) % 4, w, padding_idx=3),
                              lambda w: TF.embedding(torch.tensor(np.abs(IDS) % 4), w, padding_idx=3),
                              [(4, 3)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, IDS, label_smoothing=0.1),
                      lambda x: TF.cross_entropy(x.reshape(-1, 4), torch.tensor(IDS.reshape(-1)),
                                                 label_smoothing=0.1), [(2, 3, 4)]),
    "cross_entropy_none": (lambda x: F.cross_entropy(x, IDS[0], reduction="none"),
                           lambda x: TF.cross_entropy(x, torch.tensor(IDS[0]), reduction="none"), [(3, 4)]),
    "cross_entropy_sum": (lambda x: F.cross_entropy(x, IDS[1], reduction="sum"),
                          lambda x: TF.cross_entropy(x, torch.tensor(IDS[1]), reduction="sum"), [(3, 4)]),
    "mse_loss": (F.mse_loss, TF.mse_loss, [(2, 3), (2, 3)]),
    "sdpa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=MASK),
             lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(MASK)),
             [(2, 2, 4, 3)] * 3),
    "sdpa_fewer_queries": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=MASK),
                           lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(MASK)),
                           [(2, 2, 1, 3), (2, 2, 4, 3), (2, 2, 4, 3)]),
    "cast": (lambda x: F.cast(x, np.float32), lambda x: x.float(), [(2, 3)]),
}


def _inputs(specs, rng):
    out = []
    for spec in specs:
        positive = isinstance(spec[0], str)
        shape = spec[1] if positive else spec
        data = rng.uniform(0.3, 2.0, shape) if positive else rng.standard_normal(shape)
        out.append(data)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch(name, rng):
    mg_fn, torch_fn, specs = CASES[name]
    arrays = _inputs(specs, rng)
    ours = [mg.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = mg_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-5, atol=1e-6,
                               err_msg=f"{name} forward")
    proj = rng.standard_normal(out.shape)
    out.backward(proj.astype(out.dtype))
    (ref * torch.tensor(proj, dtype=ref.dtype)).sum().backward()
    for i, (a, b) in enumerate(zip(ours, theirs)):
        expected = b.grad.numpy() if b.grad is not None else np.zeros(a.shape)
        assert a.grad is not None and a.grad.dtype == np.float64, f"{name} input {i}"
        np.testing.assert_allclose(a.grad, expected, rtol=1e-5, atol=1e-6, err_msg=f"{name} grad {i}")


def test_every_functional_op_is_compared():
    """Each name of the issue's op list has a torch case here."""
    names = {n.split("_const")[0] for n in CASES}
    issue = {"add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "tanh", "sigmoid",
             "relu", "gelu", "maximum", "minimum", "clip", "abs", "sum", "mean", "max", "var",
             "logsumexp", "reshape", "transpose", "permute", "expand", "squeeze", "unsqueeze",
             "getitem", "gather", "cat", "stack", "split", "where", "masked_fill", "matmul",
             "softmax", "log_softmax", "layer_norm", "embedding", "cross_entropy", "mse_loss",
             "linear", "sdpa", "cast"}
    assert issue <= names, sorted(issue - names)
