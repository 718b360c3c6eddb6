"""Tests of minigrad.optim: optimizers, schedules, clipping and resume.

Against torch (when installed): 20 steps on the same float64 parameters, with gradients that
depend on the current parameters (so any divergence compounds), match to 1e-6. Without torch:
hand-worked steps, weight-decay placement, clipping and state_dict resume.
"""
import math

import numpy as np
import pytest

import minigrad
from minigrad import optim
from minigrad.kernels import adamw as adamw_kernel

SHAPES = [(3, 4), (5,), ()]
STEPS = 20


def _init_params(seed=0):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s)) for s in SHAPES]  # () gives a float


def _grad(p, step, i):
    """A gradient that depends on the parameter, so trajectories that differ drift apart."""
    noise = np.asarray(np.random.default_rng(1000 * step + i).standard_normal(p.shape))
    return np.asarray(0.5 * p + noise)  # 0-d arithmetic gives a NumPy scalar


def _minigrad_run(make_opt, make_sched=None, steps=STEPS):
    params = [minigrad.Tensor(a.copy(), requires_grad=True) for a in _init_params()]
    opt = make_opt([{"params": params[:2], "lr": 0.1, "weight_decay": 0.1},
                    {"params": params[2:], "lr": 0.03, "weight_decay": 0.0}])
    sched = make_sched(opt) if make_sched else None
    lrs = []
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = _grad(p.data, t, i)
        opt.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        if sched:
            sched.step()
    return [p.data for p in params], lrs


def _torch_run(make_opt, make_sched=None, steps=STEPS):
    torch = pytest.importorskip("torch")
    params = [torch.tensor(a.copy(), requires_grad=True) for a in _init_params()]
    opt = make_opt(torch, [{"params": params[:2], "lr": 0.1, "weight_decay": 0.1},
                           {"params": params[2:], "lr": 0.03, "weight_decay": 0.0}])
    sched = make_sched(torch, opt) if make_sched else None
    lrs = []
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(_grad(p.detach().numpy(), t, i))
        opt.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        if sched:
            sched.step()
    return [p.detach().numpy() for p in params], lrs


def _assert_same(ours, theirs):
    (p_ours, lr_ours), (p_theirs, lr_theirs) = ours, theirs
    np.testing.assert_allclose(lr_ours, lr_theirs, rtol=1e-12, atol=1e-15)
    for a, b in zip(p_ours, p_theirs):
        assert a.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


OPTIMIZERS = {
    "sgd": (lambda g: optim.SGD(g, lr=0.1), lambda t, g: t.optim.SGD(g, lr=0.1)),
    "sgd_momentum": (lambda g: optim.SGD(g, lr=0.1, momentum=0.9),
                     lambda t, g: t.optim.SGD(g, lr=0.1, momentum=0.9)),
    "sgd_nesterov": (lambda g: optim.SGD(g, lr=0.1, momentum=0.8, nesterov=True),
                     lambda t, g: t.optim.SGD(g, lr=0.1, momentum=0.8, nesterov=True)),
    "adam": (lambda g: optim.Adam(g, lr=0.1, betas=(0.8, 0.95)),
             lambda t, g: t.optim.Adam(g, lr=0.1, betas=(0.8, 0.95))),
    "adamw": (lambda g: optim.AdamW(g, lr=0.1, betas=(0.8, 0.95), eps=1e-6),
              lambda t, g: t.optim.AdamW(g, lr=0.1, betas=(0.8, 0.95), eps=1e-6)),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_matches_torch_trajectory(name):
    ours, theirs = OPTIMIZERS[name]
    _assert_same(_minigrad_run(ours), _torch_run(theirs))


# the transformers formulas, written out independently of minigrad.optim
def _linear(w, n):
    return lambda s: s / max(1, w) if s < w else max(0.0, (n - s) / max(1, n - w))


def _cosine(w, n):
    return lambda s: s / max(1, w) if s < w else max(0.0, 0.5 * (1 + math.cos(math.pi * (s - w) / max(1, n - w))))


SCHEDULES = {
    "constant": (optim.get_constant_schedule, lambda s: 1.0),
    "linear": (lambda o: optim.get_linear_schedule_with_warmup(o, 4, 15), _linear(4, 15)),
    "cosine": (lambda o: optim.get_cosine_schedule_with_warmup(o, 5, 18), _cosine(5, 18)),
}


@pytest.mark.parametrize("sched", SCHEDULES)
def test_adamw_with_schedule_matches_torch(sched):
    ours, lam = SCHEDULES[sched]
    _assert_same(_minigrad_run(OPTIMIZERS["adamw"][0], ours),
                 _torch_run(OPTIMIZERS["adamw"][1], lambda t, o: t.optim.lr_scheduler.LambdaLR(o, lam)))


def test_schedule_values_by_hand():
    p = minigrad.Tensor(np.zeros(1), requires_grad=True)
    opt = optim.SGD([p], lr=1.0)
    sched = optim.get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6)
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        sched.step()
    assert seen == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    opt = optim.SGD([p], lr=2.0)
    sched = optim.get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=6)
    seen = []
    for _ in range(7):
        seen.append(sched.get_last_lr()[0])
        sched.step()
    # after warmup: 2 * 0.5 * (1 + cos(pi * k / 4)) for k = 0..4
    assert seen == pytest.approx([0.0, 1.0, 2.0, 1 + math.sqrt(0.5), 1.0, 1 - math.sqrt(0.5), 0.0])


def test_one_adamw_step_by_hand():
    # p = 1, g = 0.5, lr = 0.1, wd = 0.1, betas = (0.9, 0.999), eps = 1e-8
    #   decay:   p = 1 - 0.1 * 0.1 * 1                 = 0.99
    #   moments: m = 0.1 * 0.5 = 0.05,  v = 0.001 * 0.25 = 0.00025
    #   bias-corrected: m_hat = 0.5, v_hat = 0.25, sqrt = 0.5
    #   step:    p = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8)   = 0.890000002 (to 1e-9)
    p = minigrad.Tensor(np.array([1.0]), requires_grad=True)
    p.grad = np.array([0.5])
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.1)
    opt.step()
    assert p.data[0] == pytest.approx(0.890000002, abs=1e-12)
    assert opt.state[p]["step"] == 1
    assert opt.state[p]["exp_avg"][0] == pytest.approx(0.05)
    assert opt.state[p]["exp_avg_sq"][0] == pytest.approx(0.00025)


def test_weight_decay_sign_and_placement():
    """With a zero gradient only the decay acts, and each optimizer must decay as its formula says."""
    def one_step(opt_cls, **kw):
        p = minigrad.Tensor(np.array([2.0]), requires_grad=True)
        p.grad = np.array([0.0])
        opt_cls([p], lr=0.1, weight_decay=0.1, **kw).step()
        return p.data[0]

    # AdamW: p * (1 - lr * wd) = 1.98. A wrong sign gives 2.02; decay folded into the gradient
    # (Adam's L2) gives a full normalised Adam step: 2 - 0.1 = 1.9.
    assert one_step(optim.AdamW) == pytest.approx(1.98, abs=1e-12)
    assert one_step(optim.Adam) == pytest.approx(1.9, abs=1e-6)
    # SGD: p - lr * wd * p = 1.98
    assert one_step(optim.SGD) == pytest.approx(1.98, abs=1e-12)


def test_adamw_calls_the_kernel_wrapper_per_parameter(monkeypatch):
    calls = []
    real = adamw_kernel.adamw_update
    monkeypatch.setattr(adamw_kernel, "adamw_update", lambda *a: calls.append(a[0].shape) or real(*a))
    params = [minigrad.Tensor(np.ones(s), requires_grad=True) for s in [(2, 3), (4,), (5,)]]
    params[0].grad, params[1].grad = np.ones((2, 3)), np.ones(4)  # params[2] has no gradient
    optim.AdamW(params).step()
    assert calls == [(2, 3), (4,)]
    np.testing.assert_array_equal(params[2].data, np.ones(5))  # skipped, untouched


def test_param_groups_no_decay():
    names = ["embeddings.word_embeddings.weight", "embeddings.LayerNorm.weight", "encoder.dense.bias",
             "encoder.layer_norm.weight", "final_norm.weight", "classifier.weight", "frozen.weight"]
    named = [(n, minigrad.Tensor(np.zeros(2), requires_grad=n != "frozen.weight")) for n in names]
    groups = optim.param_groups_no_decay(named, 0.01)
    by_name = {id(p): n for n, p in named}
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert [by_name[id(p)] for p in groups[0]["params"]] == ["embeddings.word_embeddings.weight", "classifier.weight"]
    assert [by_name[id(p)] for p in groups[1]["params"]] == names[1:5]
    opt = optim.AdamW(groups, lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert opt.param_groups[1]["lr"] == 1e-3  # defaults fill what a group leaves out


def test_clip_grad_norm_by_hand():
    a, b = (minigrad.Tensor(np.zeros(s), requires_grad=True) for s in [(2,), (1,)])
    a.grad, b.grad = np.array([3.0, 4.0]), np.array([12.0])  # |(3, 4, 12)| = 13
    total = optim.clip_grad_norm_([a, b], max_norm=6.5)
    assert total == pytest.approx(13.0)
    scale = 6.5 / (13.0 + 1e-6)
    np.testing.assert_allclose(a.grad, [3 * scale, 4 * scale])
    np.testing.assert_allclose(b.grad, [12 * scale])
    # inside the ball: untouched, and the norm is still reported
    assert optim.clip_grad_norm_([a, b], max_norm=100.0) == pytest.approx(6.5, rel=1e-6)
    np.testing.assert_allclose(b.grad, [12 * scale])
    assert optim.clip_grad_norm_(a, max_norm=1.0, norm_type=math.inf) == pytest.approx(4 * scale)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    grads = [np.asarray(np.random.default_rng(i).standard_normal(s) * 3) for i, s in enumerate(SHAPES)]
    ours = [minigrad.Tensor(np.zeros(s), requires_grad=True) for s in SHAPES]
    theirs = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    for o, t, g in zip(ours, theirs, grads):
        o.grad, t.grad = g.copy(), torch.from_numpy(g.copy())
    n_ours = optim.clip_grad_norm_(ours, 2.0)
    n_theirs = torch.nn.utils.clip_grad_norm_(theirs, 2.0).item()
    assert n_ours == pytest.approx(n_theirs, rel=1e-12)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad, t.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["sgd_nesterov", "adam", "adamw"])
def test_state_dict_resume_is_identical(name):
    make = OPTIMIZERS[name][0]

    def setup():
        params = [minigrad.Tensor(a.copy(), requires_grad=True) for a in _init_params()]
        opt = make([{"params": params[:2], "lr": 0.1, "weight_decay": 0.1}, {"params": params[2:], "lr": 0.03}])
        return params, opt, optim.get_linear_schedule_with_warmup(opt, 3, 20)

    def run(params, opt, sched, steps):
        for t in steps:
            for i, p in enumerate(params):
                p.grad = _grad(p.data, t, i)
            opt.step()
            sched.step()

    straight = setup()
    run(*straight, range(20))

    first = setup()
    run(*first, range(8))
    opt_state, sched_state = first[1].state_dict(), first[2].state_dict()
    saved_params = [p.data.copy() for p in first[0]]
    run(*first, range(8, 12))  # keeps training: the saved dicts must not change under it
    resumed = setup()
    for p, saved in zip(resumed[0], saved_params):
        p.data[...] = saved
    resumed[1].load_state_dict(opt_state)
    resumed[2].load_state_dict(sched_state)
    run(*resumed, range(8, 20))
    for a, b in zip(straight[0], resumed[0]):
        np.testing.assert_array_equal(a.data, b.data)
    assert resumed[1].param_groups[0]["lr"] == straight[1].param_groups[0]["lr"]


def test_zero_grad_and_bad_arguments():
    p = minigrad.Tensor(np.ones(3), requires_grad=True)
    p.grad = np.ones(3)
    opt = optim.SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, np.zeros(3))
    opt.zero_grad()
    assert p.grad is None
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.AdamW([])
    with pytest.raises(TypeError, match=r"AdamW: params must be an iterable .* got one Tensor of shape \(3,\)"):
        optim.AdamW(p)  # as in torch; iterating it would give rows that never get a gradient
    assert optim.AdamW([{"params": p}]).param_groups[0]["params"][0] is p  # a group may hold one
    with pytest.raises(ValueError, match="appears in two groups"):
        optim.AdamW([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    p.grad = np.ones(4)
    with pytest.raises(ValueError, match=r"grad shape \(4,\) does not match parameter shape \(3,\)"):
        opt.step()
    with pytest.raises(ValueError, match="2 parameter groups saved, 1 here"):
        opt.load_state_dict(optim.SGD([{"params": [p]}, {"params": [minigrad.Tensor(np.ones(1))]}],
                                      lr=1.0).state_dict())
