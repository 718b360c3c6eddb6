"""Checking gradients: `gradcheck` compares the analytic gradient (the ops' backwards, run by
the engine) with float64 central differences on every element of every input.

It is what the test suite runs on every registered op, and what a reader adding an op runs
first. Used from tests; nothing in the library imports it.
"""
import numpy as np

from .function import no_grad
from .tensor import Tensor


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check d fn(*inputs) / d input for every float64 input that requires grad.

    A vector-valued output is reduced to a scalar by a fixed random projection,
    loss = sum(out * r), so a single backward checks every output element's contribution
    (a ones projection would hide errors that sum to zero, as in softmax's backward).
    Returns True, or raises AssertionError naming the op, the input and the largest error.
    """
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:  # as torch: otherwise it would pass having compared nothing
        raise ValueError("gradcheck: no input is a Tensor that requires grad, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences "
                            "need float64")
    out = fn(*inputs)
    op = out._node.fn.__name__ if out._node is not None else getattr(fn, "__name__", "fn")
    r = np.random.default_rng(0).standard_normal(out.shape)

    def loss():
        with no_grad():
            return float((fn(*inputs).data * r).sum())

    for i in checked:
        inputs[i].grad = None
    out.backward(r)

    for i in checked:
        x = inputs[i]
        analytic = x.grad
        if analytic is None:
            analytic = np.zeros_like(x.data)  # the output does not depend on this input
        if analytic.shape != x.shape or analytic.dtype != x.dtype:
            raise AssertionError(f"gradcheck {op}: input {i} grad has shape {analytic.shape} "
                                 f"{analytic.dtype}, input has {x.shape} {x.dtype}")
        numeric = np.empty_like(x.data)
        x.data = np.ascontiguousarray(x.data)
        flat = x.data.reshape(-1)  # a view: perturbing it perturbs the input in place
        for j in range(flat.size):
            orig = flat[j]
            flat[j] = orig + eps
            up = loss()
            flat[j] = orig - eps
            down = loss()
            flat[j] = orig
            numeric.flat[j] = (up - down) / (2 * eps)
        err = np.abs(analytic - numeric)
        bad = ~(err <= atol + rtol * np.abs(numeric))  # a NaN on either side fails, not passes
        if bad.any():
            worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -1.0)),
                                     err.shape)  # the largest error among those out of tolerance
            worst = tuple(int(k) for k in worst)  # printed (0, 2), not (np.int64(0), np.int64(2))
            raise AssertionError(
                f"gradcheck {op}: input {i} {x.shape}: max error {err[worst]:.3g} at {worst} "
                f"(analytic {analytic[worst]:.6g}, numeric {numeric[worst]:.6g}); "
                f"{int(bad.sum())} of {bad.size} elements out of tolerance")
    return True
