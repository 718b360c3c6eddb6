"""Predict with a fine-tuned model: `python -m tasks.predict --adapter DIR "text" ...`
(or one text per line on stdin).

DIR is what a training run saved: `runs/.../adapter` (LoRA: adapter weights on top of the base
model named in it) or `runs/.../model` (head-only or full: a complete model folder). Prints each
text's label with its probability (or its score, for similarity), or for NER the tagged
entities. A model trained on text pairs takes each pair as one argument or line,
"first<TAB>second".
"""
import argparse
import json
import os
import sys

import numpy as np

from minigrad import no_grad
from minigrad.nn import lora
from models.bert_tasks import BertForSequenceClassification, BertForTokenClassification
from models.tokenizer import Tokenizer
from tasks.metrics import ner_spans
from tasks.ner import word_predictions


def load_for_inference(folder):
    """(model in eval mode, tokenizer, task info) from a saved adapter or model folder."""
    info_path = os.path.join(folder, "task.json")
    if not os.path.isfile(info_path):
        raise SystemExit(f"tasks.predict: {folder} has no task.json; pass the adapter/ or model/ "
                         "folder a training run saved")
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    cls = BertForTokenClassification if info["task"] == "ner" else BertForSequenceClassification
    num_labels = len(info["label_names"]) or 1
    is_adapter = info.get("method", "lora" if os.path.isfile(os.path.join(folder, lora.ADAPTER_CONFIG))
                          else "full") == "lora"
    needed = ((lora.ADAPTER_CONFIG, lora.ADAPTER_WEIGHTS) if is_adapter
              else ("config.json", "model.safetensors", "tokenizer.json"))
    missing = [name for name in needed if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise SystemExit(f"tasks.predict: {folder} is a {'LoRA adapter' if is_adapter else 'model'} "
                         f"folder (task.json) but has no {', '.join(missing)}")
    if is_adapter:
        base = info["base_model"]
        model = lora.load_adapter(cls.from_pretrained(base, num_labels=num_labels), folder)
        tokenizer = Tokenizer.from_folder(base)
    else:
        model = cls.from_pretrained(folder, num_labels=num_labels)
        tokenizer = Tokenizer.from_folder(folder)
    return model.eval(), tokenizer, info


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def predict(model, tokenizer, info, texts):
    """One line of output per text."""
    names = info["label_names"]
    with no_grad():
        if info["task"] == "ner":
            words = [t.split() for t in texts]
            enc = tokenizer.encode_words(words, max_length=info["max_length"])
            logits = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits.data
            lines = []
            for w, lg, wid in zip(words, logits, enc["word_ids"]):
                tags = word_predictions(lg, wid, len(w), names)
                spans = [f"[{' '.join(w[s:e])}]/{kind}" for kind, s, e in ner_spans(tags)]
                lines.append(" ".join(spans) if spans else "(no entities)")
            return lines
        pairs = None
        if info.get("text_pair"):  # trained on pairs: each text is "first<TAB>second"
            split = [t.split("\t", 1) for t in texts]
            bad = [t for t, parts in zip(texts, split) if len(parts) != 2]
            if bad:
                raise SystemExit(f"tasks.predict: this model reads text pairs; give each as "
                                 f"\"first<TAB>second\" (no tab in {bad[0]!r})")
            texts, pairs = [a for a, _ in split], [b for _, b in split]
        enc = tokenizer.encode(texts, pairs, max_length=info["max_length"])
        logits = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).logits.data
    if not names:  # regression (STS-B style scores)
        return [f"{v:.3f}" for v in logits[:, 0]]
    probs = softmax(logits)
    return [f"{names[int(p.argmax())]}\t{p.max():.3f}" for p in probs]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tasks.predict", description=__doc__.split("\n")[0])
    p.add_argument("--adapter", required=True, help="the adapter/ or model/ folder of a training run")
    p.add_argument("texts", nargs="*", help="texts to label (default: read lines from stdin)")
    args = p.parse_args(argv)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise SystemExit("tasks.predict: no texts given (as arguments or on stdin)")
    model, tokenizer, info = load_for_inference(args.adapter)
    for text, line in zip(texts, predict(model, tokenizer, info, texts)):
        print(f"{line}\t{text}")


if __name__ == "__main__":
    main(sys.argv[1:])
