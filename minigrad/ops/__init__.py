"""Every differentiable op, one `Function` subclass each, grouped by kind:

    elementwise.py  add, mul, exp, gelu, ... (broadcasting; the engine un-broadcasts)
    reduce.py       sum, mean, max, var, logsumexp
    movement.py     reshape, transpose, getitem, gather, concat, ...
    linalg.py       matmul, linear (calls the kernel layer)
    nn.py           softmax, layer_norm, dropout, embedding, cross_entropy, attention, ...

`REGISTRY` maps each op's name to its class; `register` adds one. The test suite enumerates
REGISTRY and fails for any op without a gradcheck case.
"""
REGISTRY = {}


def register(cls):
    REGISTRY[cls.__name__] = cls
    return cls
