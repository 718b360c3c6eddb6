"""LoRA (Hu et al. 2021): low-rank adapters on frozen Linear layers, with PEFT's names.

A `LoraLinear` wraps a base `Linear` (weight W (out, in)) and adds a trainable low-rank path:

    y = x W^T + b + (dropout(x) A^T B^T) * scaling        A (r, in), B (out, r)
    scaling = lora_alpha / r      (lora_alpha / sqrt(r) with rsLoRA)

A starts kaiming-uniform and B at zero, so an untrained adapter changes nothing. `merge()` folds
W += scaling * B A into the base weight (inference at no extra cost) and `unmerge()` takes it
out again. Attribute names (`base_layer`, `lora_A`, `lora_B`) and the saved keys and
`adapter_config.json` fields are PEFT's, so PEFT loads what we save and the other way round.
"""
import json
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..io import atomic_write_json, load_file, save_file
from . import init
from .layers import Dropout, Linear, check_float_input
from .module import Module

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."  # PEFT's key prefix for the wrapped model


@dataclass
class LoraConfig:
    r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    target_modules: tuple = ("query", "value")
    use_rslora: bool = False
    modules_to_save: tuple = ("classifier",)  # the task head: trained in full, saved with the adapter
    task_type: str = "SEQ_CLS"
    extra: dict = field(default_factory=dict, repr=False)

    # target_modules: names matched as suffixes at a dot ("query", "intermediate.dense"), a
    # comma-separated string of them, "all-linear", or a compiled regex that must match the
    # whole module name (PEFT's meaning of a string; `from_peft_dict` compiles one)

    def __post_init__(self):
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = tuple(t.strip() for t in self.target_modules.split(",") if t.strip())
        if isinstance(self.modules_to_save, str):  # iterated as characters, it froze the head
            self.modules_to_save = tuple(m.strip() for m in self.modules_to_save.split(",") if m.strip())
        if self.modules_to_save is None:  # PEFT's default: a classification task adds its head
            self.modules_to_save = ("classifier",) if self.task_type in ("SEQ_CLS", "TOKEN_CLS") else ()
        if self.r <= 0:
            raise ValueError(f"LoraConfig: r must be a positive integer, got {self.r}")

    @property
    def scaling(self):
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def to_peft_dict(self, base_model_name_or_path=None):
        """The fields of PEFT's adapter_config.json."""
        targets = self.target_modules
        targets = (targets if isinstance(targets, str) else targets.pattern
                   if isinstance(targets, re.Pattern) else list(targets))
        return {"peft_type": "LORA", "task_type": self.task_type, "r": self.r,
                "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                "target_modules": targets, "use_rslora": self.use_rslora, "bias": "none",
                "fan_in_fan_out": False, "modules_to_save": list(self.modules_to_save),
                "init_lora_weights": True, "inference_mode": True,
                "base_model_name_or_path": base_model_name_or_path, **self.extra}

    @classmethod
    def from_peft_dict(cls, d, path="adapter_config.json"):
        if d.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{path}: peft_type {d.get('peft_type')!r} is not LORA")
        unsupported = {k: d[k] for k, default in _PEFT_DEFAULTS.items()
                       if d.get(k) and d[k] != default}
        if unsupported:
            raise ValueError(f"{path}: sets {unsupported}; minigrad's LoRA supports only these "
                             f"fields' defaults {dict((k, _PEFT_DEFAULTS[k]) for k in unsupported)}")
        targets = d.get("target_modules") or ("query", "value")
        if isinstance(targets, str) and targets != "all-linear":  # PEFT: a regex on the full name
            targets = re.compile(targets)
        return cls(r=d["r"], lora_alpha=d["lora_alpha"], lora_dropout=d.get("lora_dropout", 0.0),
                   target_modules=targets if isinstance(targets, (str, re.Pattern)) else tuple(targets),
                   use_rslora=d.get("use_rslora", False),
                   modules_to_save=tuple(d.get("modules_to_save") or ()),
                   task_type=d.get("task_type") or "SEQ_CLS")


# adapter_config.json fields that change what an adapter computes, at the values minigrad
# implements (PEFT's defaults); an adapter that sets any other value is refused, not misread
_PEFT_DEFAULTS = {"alpha_pattern": {}, "rank_pattern": {}, "use_dora": False, "lora_bias": False,
                  "bias": "none", "fan_in_fan_out": False, "layers_to_transform": None,
                  "layers_pattern": None, "exclude_modules": None}


class LoraLinear(Module):
    """A base Linear plus the low-rank update B A, scaled. x (..., in) -> (..., out).

    Unmerged, and with its dropout the identity (p = 0, or eval mode), the layer is one op,
    `F.lora_linear`; with dropout active in training it is composed from Linear, Mul and Add."""

    def __init__(self, base_layer, r, lora_alpha, lora_dropout=0.0, use_rslora=False):
        super().__init__()
        if not isinstance(base_layer, Linear):
            raise TypeError(f"LoraLinear: can only wrap Linear, got {type(base_layer).__name__}")
        self.base_layer = base_layer
        self.r = r
        self.scaling = lora_alpha / (math.sqrt(r) if use_rslora else r)
        dtype = base_layer.weight.dtype
        self.lora_A = Linear(base_layer.in_features, r, bias=False, dtype=dtype)
        self.lora_B = Linear(r, base_layer.out_features, bias=False, dtype=dtype)
        init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # as PEFT
        init.zeros_(self.lora_B.weight)  # so the adapter starts as the identity change
        self.lora_dropout = Dropout(lora_dropout)
        self.merged = False

    in_features = property(lambda self: self.base_layer.in_features)
    out_features = property(lambda self: self.base_layer.out_features)

    def forward(self, x):
        check_float_input(self, x, self.in_features)  # name the adapter, not its base layer
        if self.merged:
            return self.base_layer(x)
        dropout = self.lora_dropout
        if dropout.p == 0.0 or not dropout.training:  # the adapter sees x itself: one fused op
            base = self.base_layer
            return F.lora_linear(x, base.weight, base.bias, self.lora_A.weight, self.lora_B.weight,
                                 self.scaling)
        # the scaling is applied to the r-wide middle, (N, r), not to the (N, out) result:
        # the same product, out / r times less work (PEFT scales the result)
        return self.base_layer(x) + self.lora_B(self.lora_A(dropout(x)) * self.scaling)

    def delta_weight(self):
        """scaling * B A: the (out, in) change the adapter makes to the base weight."""
        return (self.lora_B.weight.data @ self.lora_A.weight.data) * self.scaling

    def merge(self):
        if not self.merged:
            self.base_layer.weight.data += self.delta_weight()
            self.merged = True

    def unmerge(self):
        if self.merged:
            self.base_layer.weight.data -= self.delta_weight()
            self.merged = False

    def extra_repr(self):
        return f"r={self.r}, scaling={self.scaling:g}, merged={self.merged}"


# ---- applying adapters to a model ---------------------------------------------------------
def _is_target(name, targets, head_names):
    if any(name == h or name.startswith(h + ".") for h in head_names):
        return False  # never adapt the task head: it trains in full
    if targets == "all-linear":
        return True
    if isinstance(targets, re.Pattern):
        return targets.fullmatch(name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def apply_lora(model, config):
    """Wrap every targeted Linear of `model` in a LoraLinear, in place; freeze all base weights.

    Afterwards only the adapters' A and B and the modules in `config.modules_to_save` (the task
    head) require grad. Returns the model.
    """
    if getattr(model, "peft_config", None) is not None:
        raise ValueError("apply_lora: this model already has LoRA adapters")
    heads = tuple(h for h in config.modules_to_save if _has_module(model, h))
    targets = [name for name, m in model.named_modules()
               if isinstance(m, Linear) and name and _is_target(name, config.target_modules, heads)]
    if not targets:
        raise ValueError(f"apply_lora: no Linear module matches target_modules={config.target_modules}; "
                         f"Linear modules are e.g. {_linear_names(model)[:6]}")
    model.requires_grad_(False)
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, LoraLinear(getattr(parent, attr), config.r, config.lora_alpha,
                                         config.lora_dropout, config.use_rslora))
    for _, m in lora_layers(model):
        m.lora_A.requires_grad_(True)
        m.lora_B.requires_grad_(True)
    for h in heads:
        model.get_submodule(h).requires_grad_(True)
    object.__setattr__(model, "peft_config", config)
    return model


def _has_module(model, name):
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, Linear)]


def lora_layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear)]


def merge_lora(model):
    for _, m in lora_layers(model):
        m.merge()
    return model


def unmerge_lora(model):
    for _, m in lora_layers(model):
        m.unmerge()
    return model


def trainable_report(model):
    """'trainable params: 148,994 || all params: 22,862,594 || trainable%: 0.6517' (PEFT's line)."""
    trainable = model.num_parameters(trainable_only=True)
    total = model.num_parameters()
    return (f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100.0 * trainable / max(total, 1):.4f}")


# ---- saving and loading adapters -------------------------------------------------------------
def adapter_state_dict(model):
    """The trainable part only, under PEFT's keys: LoRA A/B and the task head."""
    config = model.peft_config
    out = {}
    for name, p in model.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        is_head = any(name.startswith(h + ".") for h in config.modules_to_save)
        if is_lora or is_head:
            out[PEFT_PREFIX + name] = p.data
    return out


def save_adapter(model, folder, base_model_name_or_path=None):
    """Write `adapter_model.safetensors` (A, B and head, no frozen weights) and `adapter_config.json`."""
    if getattr(model, "peft_config", None) is None:
        raise ValueError("save_adapter: the model has no LoRA adapters (call apply_lora first)")
    os.makedirs(folder, exist_ok=True)
    save_file(adapter_state_dict(model), os.path.join(folder, ADAPTER_WEIGHTS), metadata={"format": "pt"})
    atomic_write_json(os.path.join(folder, ADAPTER_CONFIG),
                      model.peft_config.to_peft_dict(base_model_name_or_path))


def read_adapter_config(folder):
    path = os.path.join(folder, ADAPTER_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_adapter: no {ADAPTER_CONFIG} in {folder}")
    with open(path, encoding="utf-8") as f:
        return LoraConfig.from_peft_dict(json.load(f), path)


def _adapter_shape(config):
    """What must agree for saved A/B to mean the same thing: the order of target names does not."""
    targets = config.target_modules
    return config.r, config.scaling, (targets if isinstance(targets, (str, re.Pattern))
                                      else frozenset(targets))


def load_adapter(model, folder):
    """Apply the adapter saved in `folder` to `model` (applying LoRA first if needed) and load it.
    A merged model is unmerged first and merged again with the new adapter."""
    config = read_adapter_config(folder)
    if getattr(model, "peft_config", None) is None:
        apply_lora(model, config)
    elif _adapter_shape(model.peft_config) != _adapter_shape(config):
        have = model.peft_config
        raise ValueError(f"load_adapter({folder}): adapter has r={config.r}, targets {config.target_modules}, "
                         f"scaling {config.scaling:g}; the model has r={have.r}, targets "
                         f"{have.target_modules}, scaling {have.scaling:g}")
    path = os.path.join(folder, ADAPTER_WEIGHTS)
    saved = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v
             for k, v in load_file(path, upcast=True).items()}  # bfloat16 adapters too
    own = dict(model.named_parameters())
    expected = set(k[len(PEFT_PREFIX):] for k in adapter_state_dict(model))
    missing = sorted(expected - set(saved))
    unexpected = sorted(set(saved) - set(own))
    bad = [f"{k}: file {saved[k].shape} vs model {own[k].shape}"
           for k in saved if k in own and saved[k].shape != own[k].shape]
    if missing or unexpected or bad:
        raise ValueError(f"load_adapter({path}) does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatches {bad[:5]}")
    merged = [m for _, m in lora_layers(model) if m.merged]
    for m in merged:  # take the old adapter out of the base weights before replacing it
        m.unmerge()
    for k, arr in saved.items():
        own[k].data[...] = arr
    for m in merged:
        m.merge()
    return model


def merged_state_dict(model):
    """Every weight with the adapters folded in, under the base model's own key names."""
    out = {}
    deltas = {name + ".base_layer.weight": m.delta_weight()
              for name, m in lora_layers(model) if not m.merged}
    for name, p in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        arr = p.data + deltas[name] if name in deltas else p.data
        out[name.replace(".base_layer.", ".")] = np.ascontiguousarray(arr)
    return out


def export_merged(model, folder, config_dict=None):
    """Write a full model folder (model.safetensors + config.json) with the adapters merged in,
    loadable by transformers' from_pretrained and by ours."""
    os.makedirs(folder, exist_ok=True)
    save_file(merged_state_dict(model), os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    if config_dict is not None:
        atomic_write_json(os.path.join(folder, "config.json"), config_dict)

