"""Sequence classification: `python -m tasks.classify [--preset rotten_tomatoes|trec|sms_spam]
[--train FILE --valid FILE [--test FILE]] [--method head|lora|full] ...`

A CSV or JSONL file of your own needs `text` and `label` (and optionally `text_pair`) columns.
Prints and saves accuracy, macro F1, a per-class report and the confusion matrix.
"""
import sys

import numpy as np

from models.bert_tasks import BertForSequenceClassification
from tasks import data as datasets
from tasks import metrics
from tasks.batching import encode_texts
from tasks.cli import Task, build_parser, finish_args, run

PRESETS = ("rotten_tomatoes", "trec", "sms_spam")


def load(args):
    if args.train:
        return datasets.load_classification_files(args.train, args.valid, args.test)
    return datasets.PRESETS[args.preset](seed=args.seed)


def encode(tokenizer, examples, label_names, args):
    index = {name: i for i, name in enumerate(label_names)}
    pairs = [e.text_pair for e in examples]
    return encode_texts(tokenizer, [e.text for e in examples], [index[e.label] for e in examples],
                        text_pairs=pairs if any(p is not None for p in pairs) else None,
                        max_length=args.max_length)


def evaluate(logits, encoded, examples, label_names):
    y_pred = np.array([int(np.argmax(lg)) for lg in logits])
    y_true = np.array(encoded.labels)
    report_text, report = metrics.classification_report(y_true, y_pred, label_names, digits=4)
    cm = metrics.confusion_matrix(y_true, y_pred, len(label_names))
    width = max(len(n) for n in label_names)
    cm_text = "confusion matrix (rows true, columns predicted)\n" + "\n".join(
        f"{name:>{width}} " + " ".join(f"{c:6d}" for c in row) for name, row in zip(label_names, cm))
    result = {"accuracy": metrics.accuracy(y_true, y_pred),
              "macro_f1": report["macro avg"]["f1-score"],
              "report": report, "confusion_matrix": cm.tolist()}
    return result, report_text + "\n" + cm_text + "\n"


TASK = Task("classify", PRESETS, BertForSequenceClassification, "accuracy", load, encode, evaluate)


def main(argv=None):
    args = finish_args(build_parser("classify", PRESETS, "rotten_tomatoes").parse_args(argv), "classify")
    return run(TASK, args)


if __name__ == "__main__":
    main(sys.argv[1:])
