"""The autodiff contract: `Function`, its `Context`, grad mode, and the backward walk.

Every differentiable op is a `Function` subclass with `forward(ctx, *arrays, **params)` and
`backward(ctx, grad)` side by side. `forward` receives plain `np.ndarray`s (one per positional
input) and returns one ndarray; `backward` returns one gradient per positional input, in order,
or None for an input that needs none (`ctx.needs_input_grad[i]` says which do). The engine, not
the op, sums a gradient back to the shape of a broadcast input and accumulates it.

This file sits just above the kernel layer and below every op in `minigrad.ops`.
"""
import contextlib
import threading

import numpy as np

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "grad_enabled", True)


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.prev = is_grad_enabled()
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc):
        _state.grad_enabled = self.prev
        return False


def no_grad():
    """Context manager and decorator: ops inside record no graph (inference, optimizer steps)."""
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)


class Context:
    """What one op instance keeps between its forward and its backward."""

    __slots__ = ("needs_input_grad", "saved", "__dict__")

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self.saved = ()

    def save_for_backward(self, *arrays):
        self.saved = arrays


class Node:
    """A recorded op application: the Function, its Context and the input Tensors."""

    __slots__ = ("fn", "ctx", "inputs", "released")

    def __init__(self, fn, ctx, inputs):
        self.fn, self.ctx, self.inputs, self.released = fn, ctx, inputs, False


# Hooks run around every op (the profiler and detect_anomaly install themselves here).
_op_hooks = []


class Function:
    """Base class of every op. Subclasses define `forward` and `backward` as static methods."""

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run forward on Tensor inputs and, when any of them requires grad, record a Node."""
        from .tensor import Tensor

        record = is_grad_enabled() and any(t.requires_grad for t in inputs)
        ctx = Context(tuple(record and t.requires_grad for t in inputs))
        arrays = [t.data for t in inputs]
        if _op_hooks:
            out = _run_hooked(cls, ctx, arrays, params)
        else:
            out = cls.forward(ctx, *arrays, **params)
        result = Tensor(out, requires_grad=record, _copy=False)
        if record:
            result._node = Node(cls, ctx, inputs)
        return result


def _run_hooked(cls, ctx, arrays, params):
    hooks = list(_op_hooks)
    tokens = [h.before_forward(cls, arrays) for h in hooks]
    out = cls.forward(ctx, *arrays, **params)
    for h, tok in zip(hooks, tokens):
        h.after_forward(cls, arrays, out, tok)
    return out


def unbroadcast(grad, shape):
    """Sum `grad` over the axes along which an input of `shape` was broadcast."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def _topological_order(root):
    """Nodes reachable from `root`, each after every node that consumes its output.

    Iterative depth-first search with an explicit stack, so a 10,000-op chain does not meet
    Python's recursion limit. Returns Tensors in the order backward must visit them.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        tensor, expanded = stack.pop()
        if expanded:
            order.append(tensor)
            continue
        if id(tensor) in visited:
            continue
        visited.add(id(tensor))
        stack.append((tensor, True))
        if tensor._node is not None:
            for parent in tensor._node.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order[::-1]  # outputs first


def backward(root, grad, retain_graph=False):
    """Reverse-mode sweep from `root`: propagate `grad`, accumulate into leaves' `.grad`."""
    order = _topological_order(root)
    grads = {id(root): grad}
    for tensor in order:
        g = grads.pop(id(tensor), None)
        if g is None:
            continue
        node = tensor._node
        if node is None:  # a leaf: accumulate as PyTorch does, until zero_grad
            if tensor.grad is None:  # copy: g may be shared with another input's gradient
                tensor.grad = np.array(g, dtype=tensor.data.dtype)
            else:
                tensor.grad += g
            continue
        if node.released:
            raise RuntimeError(
                f"backward: trying to backward through the graph of {node.fn.__name__} a second "
                "time; its saved values were freed. Pass retain_graph=True to the first backward.")
        input_grads = _run_backward(node, g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node.inputs):
            raise RuntimeError(f"{node.fn.__name__}.backward returned {len(input_grads)} "
                               f"gradients for {len(node.inputs)} inputs")
        if not retain_graph:
            node.ctx.saved = ()
            node.ctx.__dict__.clear()
            node.released = True
        for parent, pg in zip(node.inputs, input_grads):
            if pg is None or not parent.requires_grad:
                continue
            pg = unbroadcast(np.asarray(pg), parent.data.shape)
            key = id(parent)
            if key in grads:
                grads[key] = grads[key] + pg
            else:
                grads[key] = pg


def _run_backward(node, g):
    if not _op_hooks:
        return node.fn.backward(node.ctx, g)
    hooks = list(_op_hooks)
    tokens = [h.before_backward(node.fn, g) for h in hooks]
    out = node.fn.backward(node.ctx, g)
    for h, tok in zip(hooks, tokens):
        h.after_backward(node.fn, g, out, tok)
    return out

