"""`Module` and `Parameter`: how a model holds its weights, names them and moves them to disk.

A Module registers every `Parameter` and sub-`Module` assigned to it as an attribute, so the
dotted attribute path of a weight (`encoder.layer.0.attention.self.query.weight`) is its key in
`state_dict()`, exactly as in PyTorch and in the checkpoints we load.
"""
from collections import OrderedDict

import numpy as np

from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires grad unless frozen)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(np.ascontiguousarray(data), requires_grad=requires_grad, _copy=False)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class Module:
    """Base class of every layer and model. Subclasses set attributes in __init__ and define forward."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning {name!r}")
        # a replaced Parameter or child keeps its place (as in torch): apply_lora swaps
        # Sequential's layers by name, and popping first would move each to the end
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        else:
            # a plain Tensor over a weight would silently drop it from state_dict and the optimizer
            kind = "parameter" if name in self._parameters else "child module" if name in self._modules else None
            if kind and value is not None:
                raise TypeError(f"{type(self).__name__}: cannot assign {type(value).__name__} as {kind} "
                                f"{name!r} ({'Parameter' if kind == 'parameter' else 'Module'} or None expected)")
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    # ---- traversal ----------------------------------------------------------------------
    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, depth first; a module
        reachable by two paths (shared, as a tied layer) comes once, under its first name, as in
        torch."""
        stack, seen = [(prefix, self)], set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(children))

    def named_parameters(self, prefix=""):
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def children(self):
        return list(self._modules.values())

    def modules(self):
        return [m for _, m in self.named_modules()]

    def get_submodule(self, target):
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no submodule {part!r} (in {target!r})")
            module = module._modules[part]
        return module

    # ---- modes and freezing -----------------------------------------------------------------
    def train(self, mode=True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.fill(0)

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self):
        """Dotted name -> ndarray (the live arrays, not copies, as in PyTorch)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters of the same names; returns (missing, unexpected).

        With strict=True, any missing or unexpected key, or a shape mismatch, raises a KeyError or
        ValueError that lists every offending key.
        """
        own = dict(self.named_parameters())
        state = {k: v.data if isinstance(v, Tensor) else v for k, v in state.items()}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {own[k].shape}"
                      for k in own if k in state and tuple(np.shape(state[k])) != own[k].shape]
        if mismatched:
            raise ValueError(f"load_state_dict: shape mismatch for {len(mismatched)} tensors: "
                             + "; ".join(mismatched))
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, p in own.items():
            if k in state:
                p.data[...] = np.asarray(state[k], dtype=p.dtype)
        return missing, unexpected

    def num_parameters(self, trainable_only=False):
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")


class ModuleList(Module):
    """A list of modules registered under the names "0", "1", ... (as BERT's `encoder.layer.N`)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Module):  # it would be skipped by iteration, and by Sequential
            raise TypeError(f"{type(self).__name__}: item {len(self._modules)} has type "
                            f"{type(module).__name__}, not a Module")
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        """One module by index, or a slice as a new container of the same kind (as torch)."""
        items = list(self._modules.values())[i]
        if isinstance(i, slice):
            return Sequential(*items) if isinstance(self, Sequential) else ModuleList(items)
        return items

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
