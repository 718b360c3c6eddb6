"""Optimizers, learning-rate schedules and gradient clipping: how a model learns from `.grad`.

This layer sits above autodiff and the kernels and below the training loop (`tasks/`). It sees
parameters only as `Tensor`s with `.data` and `.grad` ndarrays, updated in place, so it never
imports `minigrad.nn`; anything that yields Tensors (a Module's `parameters()`, a list) will do.

The API is PyTorch's so that the training loop reads like every other one:

    opt = AdamW(param_groups_no_decay(model.named_parameters(), 0.01), lr=5e-5)
    sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=1000)
    for batch in data:
        loss = model(batch); loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad()

`params` is an iterable of Tensors or a list of parameter groups, dicts like
`{"params": [...], "lr": 1e-4, "weight_decay": 0.0}`; a key a group leaves out takes the
optimizer's default. Each optimizer matches `torch.optim` step for step (tests/test_optim.py).
The schedules copy the formulas of `transformers.get_*_schedule*`.
"""
import math

import numpy as np

from .kernels import adamw as adamw_kernel
from .tensor import Tensor


class Optimizer:
    """Holds the parameter groups and per-parameter state; subclasses define `_update`."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.param_groups = []
        self.state = {}  # Tensor -> dict of ndarrays and numbers (momentum, moments, step)
        if isinstance(params, Tensor):  # list() would split it into rows that never get a grad
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors or parameter "
                            f"groups, got one Tensor of shape {params.shape} (pass [p])")
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        seen = set()
        for group in groups:
            self._add_param_group(group, seen)

    def _add_param_group(self, group, seen):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group must be a dict with 'params', got {group!r:.60}")
        group = {**self.defaults, **group}
        group["params"] = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
        for p in group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: parameters must be Tensors, got {type(p).__name__}")
            if id(p) in seen:  # updating one tensor twice per step would be silently wrong
                raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} appears in two groups")
            seen.add(id(p))
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients; `set_to_none=False` zeroes the arrays in place instead."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self):
        """Update every parameter that has a gradient; those whose `.grad` is None are left alone."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.shape != p.data.shape:
                    raise ValueError(f"{type(self).__name__}.step: grad shape {p.grad.shape} does not match "
                                     f"parameter shape {p.data.shape}")
                self._update(p.data, p.grad, self.state.setdefault(p, {}), group)

    def _update(self, p, g, state, group):
        raise NotImplementedError

    # ---- checkpoints: the same layout as torch.optim, parameters named by their position -------
    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}, all copies."""
        groups, state, index = [], {}, 0
        for group in self.param_groups:
            indices = list(range(index, index + len(group["params"])))
            for i, p in zip(indices, group["params"]):
                if p in self.state:
                    state[i] = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.state[p].items()}
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": indices})
            index += len(indices)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what `state_dict()` returned, onto parameters in the same order and shapes."""
        name = type(self).__name__
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: {len(saved)} parameter groups saved, "
                             f"{len(self.param_groups)} here")
        params = {}
        for i, (old, group) in enumerate(zip(saved, self.param_groups)):
            if len(old["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} saved {len(old['params'])} parameters, "
                                 f"has {len(group['params'])} here")
            params.update(zip(old["params"], group["params"]))
        state = {}
        for i, saved_state in state_dict["state"].items():
            p = params[int(i)]
            state[p] = {}
            for k, v in saved_state.items():
                if isinstance(v, np.ndarray):
                    if v.shape != p.data.shape:
                        raise ValueError(f"{name}.load_state_dict: state {k!r} of parameter {i} has shape "
                                         f"{v.shape}, parameter has {p.data.shape}")
                    v = v.astype(p.data.dtype, copy=True)  # a copy: the checkpoint stays untouched
                state[p][k] = v
        self.state = state
        for old, group in zip(saved, self.param_groups):
            group.update({k: v for k, v in old.items() if k != "params"})


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

        d = g + weight_decay * p
        buf = d (first step) or momentum * buf + d
        p -= lr * (d + momentum * buf if nesterov else buf)
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr={lr}, momentum={momentum}, weight_decay={weight_decay} must be >= 0")
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def _update(self, p, g, state, group):
        d = g + group["weight_decay"] * p if group["weight_decay"] else g
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = d.copy()
            else:
                buf = state["momentum_buffer"]
                buf *= group["momentum"]
                buf += d
            buf = state["momentum_buffer"]
            d = d + group["momentum"] * buf if group["nesterov"] else buf
        p -= group["lr"] * d


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient, as `torch.optim.Adam` does.

    The L2 term passes through the moment estimates, so it is rescaled per coordinate by
    1/sqrt(v): a large-gradient weight decays less. That is why AdamW exists (below).
    """
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__}: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}: need lr, eps, weight_decay >= 0 and 0 <= beta < 1")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, state, group):
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
        state["step"] += 1
        beta1, beta2 = group["betas"]
        wd = group["weight_decay"]
        if self._decoupled:
            decay = wd
        else:  # Adam's L2: fold the decay into the gradient, then run the same update without decay
            g = g + wd * p if wd else g
            decay = 0.0
        # module attribute lookup, so the Numba/reference switch in the kernel layer applies; plain
        # floats, so a user's int 0 or a NumPy scalar never asks Numba for another specialisation
        adamw_kernel.adamw_update(p, g, state["exp_avg"], state["exp_avg_sq"], float(group["lr"]), float(beta1),
                                  float(beta2), float(group["eps"]), float(decay), int(state["step"]))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as `torch.optim.AdamW`.

        p -= lr * weight_decay * p          (shrink the weight itself, not through the moments)
        p -= lr * m_hat / (sqrt(v_hat) + eps)
    """
    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def param_groups_no_decay(named_parameters, weight_decay):
    """Split (name, param) pairs into a decayed group and a no-decay group.

    Biases and normalisation weights are not decayed: shrinking a LayerNorm gain towards 0 or a
    bias towards 0 is not regularisation, it just fights the layer. Names ending in "bias" or
    containing "norm" (any case: LayerNorm, layer_norm, ln_norm) go to the no-decay group.
    Frozen parameters (requires_grad False) are left out, so the optimizer never touches them.
    """
    decay, no_decay = [], []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale all gradients together so their global norm is at most `max_norm`; returns the norm.

    The norm is taken over all gradients as one vector (the norm of the per-tensor norms), in
    float64. As in torch, the scale is max_norm / (norm + 1e-6), capped at 1, so a gradient
    already inside the ball is untouched and a zero gradient does not divide by zero.
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm_type = float(norm_type)
    norms = [np.linalg.norm(g.ravel().astype(np.float64), ord=norm_type) for g in grads]
    total = float(np.linalg.norm(np.array(norms), ord=norm_type))
    scale = min(max_norm / (total + 1e-6), 1.0)
    if scale < 1.0:
        for g in grads:
            g *= scale
    return total


# ---- learning-rate schedules --------------------------------------------------------------------

class LambdaLR:
    """Set each group's lr to its initial lr times `lr_lambda(step)`, as `torch.optim.lr_scheduler.LambdaLR`.

    Construction applies step 0; each `step()` (once per optimizer step) advances by one.
    `lr_lambda` is one function, or one per parameter group.
    """

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(self.lr_lambdas) != n:
            raise ValueError(f"LambdaLR: {len(self.lr_lambdas)} lr_lambdas for {n} parameter groups")
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        return [base * f(self.last_epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self):
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def state_dict(self):
        """The position in the schedule; the lambdas are code, rebuilt by whoever resumes."""
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict):
        self.last_epoch = state_dict["last_epoch"]
        self.base_lrs = list(state_dict["base_lrs"])
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr


def _warmup(step, num_warmup_steps):
    return step / max(1, num_warmup_steps)


def get_constant_schedule(optimizer, last_epoch=-1):
    """The lr never changes."""
    return LambdaLR(optimizer, lambda step: 1.0, last_epoch)


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    """lr rises linearly from 0 over the warmup, then falls linearly to 0 at `num_training_steps`."""
    def lr_lambda(step):
        if step < num_warmup_steps:
            return _warmup(step, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))
    return LambdaLR(optimizer, lr_lambda, last_epoch)


def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5,
                                    last_epoch=-1):
    """Linear warmup, then a cosine from the peak lr down to 0 (`num_cycles=0.5`: half a period)."""
    def lr_lambda(step):
        if step < num_warmup_steps:
            return _warmup(step, num_warmup_steps)
        progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))
    return LambdaLR(optimizer, lr_lambda, last_epoch)
