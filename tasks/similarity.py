"""The sentence-similarity command line (STS-benchmark):

    python -m tasks.similarity --zero-shot [--split test|dev] [--out FILE|DIR] [--model DIR]
    python -m tasks.similarity [--method head|lora|full] [--train FILE --valid FILE] ...

`--zero-shot` scores each pair by the cosine of the two sentence embeddings, with no training,
and prints Spearman and Pearson x 100 against the gold ratings (the evaluation lives in
`tasks/sts.py`). Without it, BERT is fine-tuned as a cross-encoder: both sentences in one input,
a regression head (num_labels=1, mean-squared error) predicting the 0-5 score; your own files
are CSV/JSONL with `text`, `text_pair` and a numeric `label`.
"""
import os
import sys

import numpy as np

from models.bert_tasks import BertForSequenceClassification
from tasks import data as datasets
from tasks import sts
from tasks.batching import encode_texts
from tasks.cli import DEFAULT_LR, Task, build_parser, finish_args, run

PRESETS = ("sts_b",)
# A regression head learns a scale as well as a ranking, and LoRA here wants a larger step than
# for classification: STS-B, 3 epochs, dev / test Spearman x100 83.28 / 80.82 at 5e-4 and
# 85.59 / 82.87 at 1.5e-3 (benchmarks/RESULTS.md).
LR_DEFAULTS = dict(DEFAULT_LR, lora=1.5e-3)


def load(args):
    if args.train:
        data = datasets.load_classification_files(args.train, args.valid, args.test, numeric=True)
        if data.train[0].text_pair is None:
            raise SystemExit(f"tasks.similarity: {args.train} has no `text_pair` column (the "
                             "second sentence of each pair)")
        return data
    return datasets.PRESETS[args.preset]()


def encode(tokenizer, examples, label_names, args):
    if any(e.text_pair is None for e in examples):
        raise SystemExit("tasks.similarity: every example needs a text_pair (the second sentence)")
    return encode_texts(tokenizer, [e.text for e in examples], [float(e.label) for e in examples],
                        text_pairs=[e.text_pair for e in examples], max_length=args.max_length)


def evaluate(logits, encoded, examples, label_names):
    pred = np.array([float(lg[0]) for lg in logits])
    result = sts.correlations(pred, np.array(encoded.labels))
    return result, (f"Spearman x100 {result['spearman']:.2f}   Pearson x100 {result['pearson']:.2f}"
                    f"   ({len(pred)} pairs)\n")


def init_head(model, train):
    """Start a new regression head's bias at the mean training score.

    transformers starts it at 0, but STS-B's scores average about 2.7, and Adam moves each
    weight by about lr per step: at LoRA's 5e-4, the bias alone would need over 5,000 steps
    (STS-B's epoch is 360) to reach the mean, so the first epoch goes on learning the scale,
    not the ranking (dev Spearman x100 was 11 after epoch 1 with the bias at 0). A head read
    from the model folder is left as it is."""
    bias = model.classifier.bias.data
    if not bias.any():
        bias[...] = np.mean(train.labels, dtype=np.float64)


TASK = Task("similarity", PRESETS, BertForSequenceClassification, "spearman", load, encode,
            evaluate, num_labels=lambda names: 1, init_head=init_head)


def build_similarity_parser():
    parser = build_parser("similarity", PRESETS, "sts_b", lr_defaults=LR_DEFAULTS)
    parser.add_argument("--zero-shot", action="store_true",
                        help="evaluate the sentence embeddings as they are, without training")
    parser.add_argument("--split", choices=sorted(sts.SPLITS), default="test",
                        help="with --zero-shot: STS-B split to evaluate (default: test)")
    return parser


def main(argv=None):
    parser = build_similarity_parser()
    args = parser.parse_args(argv)
    if not args.zero_shot:
        return run(TASK, finish_args(args, "similarity", LR_DEFAULTS))
    if args.train or args.valid or args.test:
        parser.error("--zero-shot scores STS-B's own pairs; it takes no --train/--valid/--test")
    if args.out and os.path.isdir(args.out):  # --out names a folder elsewhere: write into it
        args.out = os.path.join(args.out, "zero_shot.json")
    result = sts.zero_shot(args.model, args.split, args.out, max_length=args.max_length)
    print(f"STS-B {result['split']} ({result['pairs']} pairs, {result['mode']}, max_length "
          f"{result['max_length']}): Spearman {result['spearman']:.2f}  "
          f"Pearson {result['pearson']:.2f}  ({result['seconds']:.0f} s)")
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    main(sys.argv[1:])
