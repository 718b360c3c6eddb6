"""`detect_anomaly()`: stop at the first op that turns finite numbers into NaN or inf.

A NaN loss says only that something went wrong somewhere in thousands of ops. Inside

    with minigrad.detect_anomaly():
        loss = model(x, labels=y).loss
        loss.backward()

every op's forward output and every backward gradient is checked, and the first non-finite one
raises FloatingPointError naming the op, forward or backward, and the shapes involved. It
installs itself as one of the engine's op hooks (`minigrad.function._op_hooks`, the protocol the
profiler uses too), so the ops themselves know nothing about it. Checking every array costs a
pass over it: a debugging tool, not for every run.

Which values count as anomalies:
- a NaN anywhere (output, input or gradient): NaN is never meaningful;
- an inf in an op's output when none of its inputs held one: the op produced it (exp overflow,
  log(0), division by zero). An inf that only flows on from an input is allowed, because masks
  written with -inf (`masked_fill(scores, mask, -inf)`) are legitimate and softmax turns them
  back into finite numbers;
- any inf in a gradient: backward never has a reason to produce one.
"""
import contextlib

import numpy as np

from . import function


def _shapes(arrays):
    return ", ".join(str(tuple(np.shape(a))) for a in arrays)


def _has(arr, test):
    a = np.asarray(arr)
    return np.issubdtype(a.dtype, np.floating) and bool(test(a).any())


class _AnomalyHook:
    """The op-hook object: checks after each forward and each backward; keeps no state."""

    def before_forward(self, cls, arrays):
        for i, a in enumerate(arrays):
            if _has(a, np.isnan):
                # no op of this graph made it (that op would have raised): a weight or the data
                raise FloatingPointError(
                    f"detect_anomaly: {cls.__name__} forward received NaN in input {i} "
                    f"(input shapes {_shapes(arrays)}); it comes from a parameter or the data")
        return None

    def after_forward(self, cls, arrays, out, token):
        inf_in = any(_has(a, np.isinf) for a in arrays)
        if _has(out, np.isnan):
            what = "NaN"
        elif _has(out, np.isinf) and not inf_in:
            what = "inf"
        else:
            return
        raise FloatingPointError(
            f"detect_anomaly: {cls.__name__} forward produced {what} in its output "
            f"{tuple(np.shape(out))} from {'inputs holding inf' if inf_in else 'finite inputs'} "
            f"of shapes {_shapes(arrays)}")

    def before_backward(self, fn, grad):
        if not np.isfinite(grad).all():
            # every earlier backward was checked, so this is the gradient passed to .backward()
            raise FloatingPointError(
                f"detect_anomaly: {fn.__name__} backward received a non-finite gradient of "
                f"shape {np.shape(grad)} (the grad= given to backward())")
        return None

    def after_backward(self, fn, grad, input_grads, token, input_shapes):
        grads = input_grads if isinstance(input_grads, tuple) else (input_grads,)
        for i, g in enumerate(grads):
            if g is not None and not np.isfinite(g).all():
                what = "NaN" if _has(g, np.isnan) else "inf"
                raise FloatingPointError(
                    f"detect_anomaly: {fn.__name__} backward produced {what} in the gradient of "
                    f"input {i} (gradient shapes {_shapes(g for g in grads if g is not None)}) "
                    f"from a finite incoming gradient of shape {np.shape(grad)}")


@contextlib.contextmanager
def detect_anomaly():
    """Context manager: the first op producing NaN or inf, forward or backward, raises
    FloatingPointError naming the op and its shapes. Nests, and undoes itself on exit."""
    hook = _AnomalyHook()
    function._op_hooks.append(hook)
    try:
        yield
    finally:
        function._op_hooks.remove(hook)
