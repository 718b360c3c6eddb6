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

    def _recreate_cm(self):
        # as a decorator, each call gets its own instance: a recursive or concurrent call
        # would otherwise overwrite the `prev` that an outer call restores on exit
        return type(self)(self.enabled)

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
    """A recorded op application: the Function, its Context, and where each input came from.

    `parents[i]` is the Node that produced input i, or the input Tensor itself when it is a leaf
    (a parameter, or a constant); `shapes[i]` is that input's shape, for un-broadcasting its
    gradient. A node keeps no input data of its own: an intermediate value stays alive only if
    some op saved it for backward (as in PyTorch), so the graph holds what backward needs.
    """

    __slots__ = ("fn", "ctx", "parents", "shapes", "shape", "dtype", "released")

    def __init__(self, fn, ctx, inputs, out):
        self.fn, self.ctx, self.released = fn, ctx, False
        self.parents = tuple(t if t._node is None else t._node for t in inputs)
        self.shapes = tuple(t.data.shape for t in inputs)
        self.shape, self.dtype = out.shape, out.dtype


# Hooks run around every op (the profiler and detect_anomaly install themselves here):
#   before_forward(cls, arrays) -> token;   after_forward(cls, arrays, out, token)
#   before_backward(fn, grad) -> token;     after_backward(fn, grad, input_grads, token, input_shapes)
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
            result._node = Node(cls, ctx, inputs, result.data)
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


def graph_nodes(root):
    """The Nodes reachable from the Node `root`, each before every node that produced one of
    its inputs: the order backward visits them (outputs first).

    Iterative depth-first search with an explicit stack, so a 10,000-op chain does not meet
    Python's recursion limit.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)  # post-order: after every node it depends on
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if isinstance(parent, Node) and id(parent) not in visited:
                stack.append((parent, False))
    return order[::-1]


def _accumulate(leaf, grad):
    """Add a gradient into a leaf's .grad, as PyTorch does, until zero_grad."""
    if leaf.grad is None:  # copy: grad may be shared with another input's gradient
        leaf.grad = np.array(grad, dtype=leaf.data.dtype)
    else:
        leaf.grad += grad


def backward(root, grad, retain_graph=False):
    """Reverse-mode sweep from the Tensor `root`: propagate `grad` through the graph in reverse
    topological order and accumulate into the `.grad` of every leaf that requires grad."""
    if root._node is None:
        _accumulate(root, grad)
        return
    grads = {id(root._node): grad}  # gradient of each node's output, summed over its consumers
    owned = set()  # keys of `grads` whose array this sweep allocated, so may add into in place
    for node in graph_nodes(root._node):
        owned.discard(id(node))
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if node.released:
            raise RuntimeError(
                f"backward: trying to backward through the graph of {node.fn.__name__} a second "
                "time; its saved values were freed. Pass retain_graph=True to the first backward.")
        input_grads = _run_backward(node, g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if len(input_grads) != len(node.parents):
            raise RuntimeError(f"{node.fn.__name__}.backward returned {len(input_grads)} "
                               f"gradients for {len(node.parents)} inputs")
        if not retain_graph:
            node.ctx.saved = ()
            node.ctx.__dict__.clear()
            node.released = True
        for parent, shape, pg in zip(node.parents, node.shapes, input_grads):
            if pg is None:
                continue
            if np.ndim(pg) < len(shape):
                raise RuntimeError(f"{node.fn.__name__}.backward returned a gradient of shape "
                                   f"{np.shape(pg)} for an input of shape {shape}")
            if isinstance(parent, Node):
                pg = unbroadcast(np.asarray(pg), shape)
                key = id(parent)
                if key not in grads:
                    grads[key] = pg  # may be an op's own array or view: never written to
                elif key in owned and grads[key].dtype == np.result_type(grads[key], pg):
                    grads[key] += pg  # a sum allocated below: add in place, no new buffer
                else:
                    grads[key] = grads[key] + pg
                    owned.add(key)
            elif parent.requires_grad:
                _accumulate(parent, unbroadcast(np.asarray(pg), shape))


def _run_backward(node, g):
    if not _op_hooks:
        return node.fn.backward(node.ctx, g)
    hooks = list(_op_hooks)
    tokens = [h.before_backward(node.fn, g) for h in hooks]
    out = node.fn.backward(node.ctx, g)
    for h, tok in zip(hooks, tokens):
        h.after_backward(node.fn, g, out, tok, node.shapes)
    return out

