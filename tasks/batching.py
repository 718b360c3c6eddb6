"""From examples to padded batches: tokenise once, bucket by length, pad each batch to its longest.

An `Encoded` set holds, per example, its token ids (no padding) and its label: an int class,
a float score, or (NER) one label per token with -100 on sub-words that carry none. Batches are
formed by sorting examples by length within chunks of 50 batches and then shuffling the batches,
so a batch of short sentences costs short-sentence time (dynamic padding).

Shapes: B batch, T the longest example in the batch.
"""
from dataclasses import dataclass

import numpy as np

from models.tokenizer import align_labels


@dataclass
class Encoded:
    ids: list          # N arrays of token ids (int32), [CLS] ... [SEP] (... [SEP])
    type_ids: list     # N arrays of token type ids, same lengths
    labels: list       # N labels: int / float, or (NER) int arrays of the same length as ids
    word_ids: list = None  # NER only: per example, the word index of each token (None: special)

    def __len__(self):
        return len(self.ids)

    @property
    def lengths(self):
        return np.array([len(x) for x in self.ids])

    def subset(self, index):
        pick = lambda xs: None if xs is None else [xs[i] for i in index]  # noqa: E731
        return Encoded(pick(self.ids), pick(self.type_ids), pick(self.labels), pick(self.word_ids))


def _split_rows(enc):
    n = enc["attention_mask"].sum(axis=1)
    ids = [row[:k].astype(np.int32) for row, k in zip(enc["input_ids"], n)]
    types = [row[:k].astype(np.int8) for row, k in zip(enc["token_type_ids"], n)]
    return ids, types, n


def encode_texts(tokenizer, texts, labels, text_pairs=None, max_length=128, chunk=512):
    """Sequence tasks: texts (and pairs) with one label each -> Encoded."""
    ids, types = [], []
    for s in range(0, len(texts), chunk):
        pairs = None if text_pairs is None else text_pairs[s:s + chunk]
        i, t, _ = _split_rows(tokenizer.encode(texts[s:s + chunk], pairs, max_length=max_length))
        ids += i
        types += t
    return Encoded(ids, types, list(labels))


def encode_words(tokenizer, sentences, tag_ids, max_length=128, chunk=512):
    """NER: sentences (lists of words) with one tag id per word -> Encoded whose labels put each
    word's tag on its first sub-word and -100 elsewhere."""
    ids, types, labels, word_ids = [], [], [], []
    for s in range(0, len(sentences), chunk):
        enc = tokenizer.encode_words(sentences[s:s + chunk], max_length=max_length)
        i, t, n = _split_rows(enc)
        aligned = align_labels(enc["word_ids"], tag_ids[s:s + chunk])
        ids += i
        types += t
        labels += [row[:k] for row, k in zip(aligned, n)]
        word_ids += [w[:k] for w, k in zip(enc["word_ids"], n)]
    return Encoded(ids, types, labels, word_ids)


def make_batches(lengths, batch_size, rng=None, chunk_batches=50):
    """Index arrays of at most `batch_size` examples of similar length.

    With `rng` (training): shuffle, sort by length within chunks of `chunk_batches` batches, then
    shuffle the batches. Without (evaluation): sorted by length, in order.
    """
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    batches = []
    step = batch_size * chunk_batches
    for s in range(0, n, step):
        chunk = order[s:s + step]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(data, index, pad_id=0):
    """The examples at `index` -> dict of (B, T) int64 arrays and labels, padded to the longest."""
    T = max(len(data.ids[i]) for i in index)
    B = len(index)
    input_ids = np.full((B, T), pad_id, np.int64)
    token_type_ids = np.zeros((B, T), np.int64)
    attention_mask = np.zeros((B, T), np.int64)
    token_labels = isinstance(data.labels[index[0]], np.ndarray)
    labels = np.full((B, T), -100, np.int64) if token_labels else np.array([data.labels[i] for i in index])
    for b, i in enumerate(index):
        k = len(data.ids[i])
        input_ids[b, :k] = data.ids[i]
        token_type_ids[b, :k] = data.type_ids[i]
        attention_mask[b, :k] = 1
        if token_labels:
            labels[b, :k] = data.labels[i]
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "token_type_ids": token_type_ids, "labels": labels}
