"""Token classification (named entities): `python -m tasks.ner [--preset conll2003]
[--train FILE --valid FILE [--test FILE]] [--method head|lora|full] ...`

Files are CoNLL: one token per line with its IOB2 tag in the last column, blank lines between
sentences. Each word's tag is learned on its first sub-word (the others are ignored by the loss),
and predictions are scored as entities with strict IOB2 span matching.
"""
import sys

import numpy as np

from models.bert_tasks import BertForTokenClassification
from tasks import data as datasets
from tasks import metrics
from tasks.batching import encode_words
from tasks.cli import Task, build_parser, finish_args, run

PRESETS = ("conll2003",)


def load(args):
    if args.train:
        return datasets.load_conll_files(args.train, args.valid, args.test)
    return datasets.PRESETS[args.preset]()


def encode(tokenizer, sentences, label_names, args):
    index = {name: i for i, name in enumerate(label_names)}
    return encode_words(tokenizer, [s.tokens for s in sentences],
                        [[index[t] for t in s.tags] for s in sentences], max_length=args.max_length)


def word_predictions(logits, word_ids, n_words, label_names):
    """Token logits (T, K) -> one tag per word, read at each word's first sub-word. Words cut off
    by truncation get "O"."""
    tags = ["O"] * n_words
    previous = None
    for t, w in enumerate(word_ids):
        if w is not None and w != previous:
            tags[w] = label_names[int(np.argmax(logits[t]))]
        previous = w
    return tags


def evaluate(logits, encoded, sentences, label_names):
    pred = [word_predictions(lg, w, len(s.tags), label_names)
            for lg, w, s in zip(logits, encoded.word_ids, sentences)]
    gold = [s.tags for s in sentences]
    text, report = metrics.ner_report(gold, pred)
    micro = report["micro avg"]
    result = {"f1": micro["f1-score"], "precision": micro["precision"], "recall": micro["recall"],
              "report": report}
    return result, text


TASK = Task("ner", PRESETS, BertForTokenClassification, "f1", load, encode, evaluate)


def main(argv=None):
    args = finish_args(build_parser("ner", PRESETS, "conll2003").parse_args(argv), "ner")
    return run(TASK, args)


if __name__ == "__main__":
    main(sys.argv[1:])
