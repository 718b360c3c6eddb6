"""BERT (Devlin et al. 2018) built from minigrad.nn, reading top to bottom like the paper.

    input_ids (B, T) -> embeddings (word + position + token type, LayerNorm, dropout) -> (B, T, C)
    -> N post-LN encoder layers: self-attention, dense + residual + LayerNorm,
       GELU feed-forward (C -> F -> C) + residual + LayerNorm
    -> last_hidden_state (B, T, C); pooler: tanh(dense(h[:, 0])) -> (B, C)

Attribute paths equal the Hugging Face checkpoint keys (`encoder.layer.0.attention.self.query
.weight`), so loading needs no renaming table beyond the legacy names handled in
`_normalise_key`. Task heads live in `models/bert_tasks.py`; tokenization in `models/tokenizer.py`.
"""
import json
import os
import sys
import warnings
from dataclasses import dataclass, field, fields

import numpy as np

import minigrad.functional as F
from minigrad import io
from minigrad.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, additive_mask, init
from minigrad.nn.attention import merge_heads, split_heads
from minigrad.nn.layers import check_float_input
from models.tokenizer import default_model_dir  # noqa: F401  (re-exported: the bundled MiniLM)


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    extra: dict = field(default_factory=dict, repr=False)  # keys we keep but do not use

    def __post_init__(self):
        # checked here, not only when reading config.json, so a config built in code cannot
        # silently run another model (an unknown hidden_act would have run tanh-GELU)
        if self.num_attention_heads < 1:  # else the check below fails in Python's modulo
            raise ValueError(f"BertConfig: num_attention_heads must be at least 1, got "
                             f"{self.num_attention_heads}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
            raise ValueError(f"BertConfig: hidden_act {self.hidden_act!r} is not supported")
        if self.extra.get("is_decoder"):
            # transformers' BertModel then masks attention causally; ours is an encoder only
            raise ValueError("BertConfig: is_decoder=true (causal attention, a BertLMHeadModel) "
                             "is not supported; this BertModel is an encoder")

    @classmethod
    def from_json_file(cls, path, **overrides):
        """The config in `path`, with `overrides` (any config.json key, e.g. num_hidden_layers
        or classifier_dropout, as transformers' from_pretrained kwargs) replacing its values."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"BertConfig: no config.json at {path}")
        with open(path, encoding="utf-8") as f:
            raw = {**json.load(f), **overrides}
        known = {f.name for f in fields(cls)} - {"extra"}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known},
                       extra={k: v for k, v in raw.items() if k not in known})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **d, "model_type": "bert"}


class ModelOutput:
    """The result of a forward pass: named fields as attributes (as transformers' outputs)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __repr__(self):
        return f"ModelOutput({', '.join(self.__dict__)})"


# ---- the layers, in the order data flows through them --------------------------------------
class BertEmbeddings(Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        T = input_ids.shape[1]
        x = (self.word_embeddings(input_ids)                      # (B, T, C)
             + self.position_embeddings(np.arange(T)[None, :])   # (1, T, C)
             + self.token_type_embeddings(token_type_ids))       # (B, T, C)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(Module):
    def __init__(self, c):
        super().__init__()
        self.num_heads = c.num_attention_heads
        self.query = Linear(c.hidden_size, c.hidden_size)
        self.key = Linear(c.hidden_size, c.hidden_size)
        self.value = Linear(c.hidden_size, c.hidden_size)
        self.dropout = Dropout(c.attention_probs_dropout_prob)

    def forward(self, x, mask, queries=None):
        """x (B, T, C) -> (B, L, C): the positions in `queries` (B, L, C) (all of x when None)
        attend to all T positions of x."""
        q = split_heads(self.query(x if queries is None else queries), self.num_heads)  # (B, H, L, D)
        k = split_heads(self.key(x), self.num_heads)  # (B, H, T, D)
        v = split_heads(self.value(x), self.num_heads)
        p = self.dropout.p if self.training else 0.0  # dropout on the attention probabilities
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # all heads
        return merge_heads(ctx)  # (B, L, C)


class BertSelfOutput(Module):
    def __init__(self, c):
        super().__init__()
        self.dense = Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual):
        # LayerNorm(dropout(dense(h)) + residual), the dropout, add and norm in one pass
        ln, drop = self.LayerNorm, self.dropout
        return F.dropout_add_layer_norm(self.dense(h), residual, ln.weight, ln.bias, drop.p,
                                        drop.training, ln.eps)  # (B, T, C)


class BertAttention(Module):
    def __init__(self, c):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, x, mask, queries=None):
        residual = x if queries is None else queries
        return self.output(self.self(x, mask, queries), residual)


class BertIntermediate(Module):
    def __init__(self, c):
        super().__init__()
        self.dense = Linear(c.hidden_size, c.intermediate_size)
        self.act = c.hidden_act

    def forward(self, x):
        if self.act == "gelu" and isinstance(self.dense, Linear):
            # bias and GELU in one pass over the product's output (a LoRA-wrapped dense takes
            # the general path below)
            check_float_input(self.dense, x, self.dense.in_features)
            return F.linear(x, self.dense.weight, self.dense.bias, gelu=True)  # (B, T, F)
        h = self.dense(x)  # (B, T, F)
        if self.act == "relu":
            return F.relu(h)
        return F.gelu(h, approximate="none" if self.act == "gelu" else "tanh")


class BertOutput(BertSelfOutput):
    def __init__(self, c):
        super().__init__(c)
        self.dense = Linear(c.intermediate_size, c.hidden_size)


class BertLayer(Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, x, mask, queries=None):
        """x (B, T, C) -> (B, L, C), the new states of the positions in `queries` (rows of x;
        all of x when None). Past attention every position is computed on its own, so the
        rows not asked for are never computed."""
        a = self.attention(x, mask, queries)
        return self.output(self.intermediate(a), a)


class BertEncoder(Module):
    def __init__(self, c):
        super().__init__()
        self.layer = ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x, mask, output_hidden_states=False, cls_only=False):
        """cls_only: the last layer computes the [CLS] row alone, (B, 1, C). Its attention still
        reads every position's keys and values, so the layers below stay whole."""
        states = [x]
        for i, layer in enumerate(self.layer):
            last = i == len(self.layer) - 1
            x = layer(x, mask, x[:, :1] if cls_only and last else None)
            if output_hidden_states:
                states.append(x)
        return x, (states if output_hidden_states else None)


class BertPooler(Module):
    def __init__(self, c):
        super().__init__()
        self.dense = Linear(c.hidden_size, c.hidden_size)

    def forward(self, h):
        return F.tanh(self.dense(h[:, 0]))  # the [CLS] token's state (B, C)


class BertModel(Module):
    def __init__(self, config, add_pooling_layer=True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False,
                cls_only=False):
        """input_ids (B, T) -> last_hidden_state (B, T, C), pooler_output (B, C) (with a pooler),
        hidden_states (the embeddings and every layer's output, when asked for).

        cls_only=True computes what the pooler reads and nothing more: the last layer runs for
        the [CLS] position alone, so last_hidden_state is (B, 1, C) and pooler_output is the
        same as without it. BertForSequenceClassification uses it: with 6 layers it skips 14%
        of the matrix products of the forward, and of the backward."""
        input_ids = check_ids(input_ids, "input_ids", self.config.vocab_size)
        B, T = input_ids.shape
        if T == 0:  # the softmax over no keys is undefined; the tokenizer always adds [CLS] [SEP]
            raise ValueError(f"BertModel: input_ids {input_ids.shape} has no tokens")
        if T > self.config.max_position_embeddings:
            raise ValueError(f"BertModel: sequence length {T} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}; truncate in the tokenizer")
        if attention_mask is None:
            attention_mask = np.ones((B, T), np.int64)
        if token_type_ids is None:
            token_type_ids = np.zeros((B, T), np.int64)
        for name, arr in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if np.shape(arr) != (B, T):
                raise ValueError(f"BertModel: {name} has shape {np.shape(arr)}, input_ids has {(B, T)}")
        token_type_ids = check_ids(token_type_ids, "token_type_ids", self.config.type_vocab_size)
        mask = additive_mask(attention_mask)  # (B, 1, 1, T)
        x = self.embeddings(input_ids, token_type_ids)
        h, states = self.encoder(x, mask, output_hidden_states, cls_only)
        pooled = self.pooler(h) if self.pooler is not None else None
        return ModelOutput(last_hidden_state=h, pooler_output=pooled, hidden_states=states)

    @classmethod
    def from_pretrained(cls, folder=None, report=False, **config_overrides):
        """Read `config.json` and `model.safetensors` from `folder` (default: the bundled MiniLM)."""
        folder = folder or default_model_dir()
        config = BertConfig.from_json_file(os.path.join(folder, "config.json"), **config_overrides)
        model = cls(config)
        load_pretrained(model, folder, report=report)
        return model


def check_ids(ids, name, limit):
    """ids as a (B, T) int64 ndarray with values in [0, limit), or a clear error."""
    ids = np.asarray(getattr(ids, "data", ids))
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"BertModel: {name} must be a (B, T) integer array, got {ids.dtype} {ids.shape}")
    if ids.ndim != 2:
        raise ValueError(f"BertModel: {name} must be a (B, T) integer array, got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= limit):
        raise ValueError(f"BertModel: {name} values must lie in [0, {limit}), got [{ids.min()}, {ids.max()}]")
    return ids.astype(np.int64, copy=False)


# ---- loading ----------------------------------------------------------------------------------
_IGNORED_SUFFIXES = ("position_ids",)  # buffers, not parameters


def _normalise_key(key):
    """Checkpoint key -> our attribute path (legacy `gamma`/`beta` names of old TF exports)."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def load_pretrained(model, folder, report=False):
    """Load `folder/model.safetensors` into the BertModel `model`.

    Accepts keys with or without the `bert.` prefix, renames legacy names, skips buffers, and
    raises one error listing every missing key and shape mismatch. A checkpoint without any
    pooler weights (as transformers saves a masked-LM or token-classification model) gets a new
    pooler and a warning, as in transformers. Returns the load report and
    the tensors no BertModel parameter took (a task head's `classifier.*`, for the caller).
    """
    path = os.path.join(folder, "model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"from_pretrained: no model.safetensors in {folder}")
    tensors = io.load_file(path, upcast=True)  # a bfloat16 checkpoint loads as float32
    own = dict(model.named_parameters())
    mapped, renamed, ignored, rest = {}, [], [], {}
    for key, arr in tensors.items():
        if key.endswith(_IGNORED_SUFFIXES):
            ignored.append(key)
            continue
        name = _normalise_key(key)
        if name != key:
            renamed.append(f"{key} -> {name}")
        name = name[len("bert."):] if name.startswith("bert.") else name
        if name in own:
            mapped[name] = arr
        else:
            rest[name] = arr
    missing = [k for k in own if k not in mapped]
    # transformers saves BertForMaskedLM and BertForTokenClassification without a pooler
    pooler = [k for k in own if k.startswith("pooler.")]
    new_pooler = bool(pooler) and set(missing) == set(pooler)
    if new_pooler:
        missing = []
    mismatched = [f"{k}: checkpoint {arr.shape} vs model {own[k].shape}"
                  for k, arr in mapped.items() if arr.shape != own[k].shape]
    if missing or mismatched:
        raise ValueError(f"from_pretrained({folder}): "
                         + (f"missing keys {missing}. " if missing else "")
                         + (f"shape mismatches: {'; '.join(mismatched)}" if mismatched else ""))
    for k, arr in mapped.items():
        own[k].data[...] = arr
    if new_pooler:  # as transformers does: a new pooler, initialised the BERT way, and a warning
        init.normal_(model.pooler.dense.weight, 0.0, model.config.extra.get("initializer_range", 0.02))
        init.zeros_(model.pooler.dense.bias)
        warnings.warn(f"from_pretrained({folder}): the checkpoint has no pooler; {pooler} are "
                      "newly initialised (train them before using pooler_output)")
    result = {"mapped": sorted(mapped), "renamed": renamed, "ignored": ignored + sorted(rest)}
    if report:
        print(f"loaded {path}: {len(mapped)} mapped, {len(renamed)} renamed {renamed}, "
              f"{len(result['ignored'])} not used by BertModel {result['ignored']}", file=sys.stderr)
    return result, rest


# ---- sentence embeddings ----------------------------------------------------------------------
def mean_pool(last_hidden_state, attention_mask):
    """Mean over tokens whose mask is 1, then L2 normalise: (B, T, C) -> (B, C) ndarray.
    Tensors (a model output's last_hidden_state; the mask given to the model) are read as
    their values, without gradient."""
    h = np.asarray(getattr(last_hidden_state, "data", last_hidden_state))
    m = np.asarray(getattr(attention_mask, "data", attention_mask), np.float32)[:, :, None]
    summed = (h * m).sum(axis=1)
    emb = summed / np.maximum(m.sum(axis=1), 1e-9)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def sentence_embeddings(model, tokenizer, texts, batch_size=64, max_length=None):
    """The recipe of all-MiniLM-L6-v2: masked mean of the last hidden state, L2-normalised.

    max_length None is that recipe's 256 (sentence_bert_config.json's max_seq_length), or the
    model's positions if fewer, as sentence-transformers caps it; the model is run in eval mode
    and left in the mode it was in.
    """
    from minigrad import no_grad

    if max_length is None:  # not 256 outright: a 128-position model warned on every batch
        max_length = min(256, tokenizer.model_max_length)
    was_training = model.training
    model.eval()
    out = []
    with no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer.encode(texts[i:i + batch_size], max_length=max_length)
            h = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).last_hidden_state
            out.append(mean_pool(h.data, enc["attention_mask"]))
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


if __name__ == "__main__":
    # `python -m models.bert --check-parity [folder]`: the layer-by-layer table against transformers
    from models import parity

    sys.exit(parity.main())
