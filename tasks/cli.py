"""What every fine-tuning command shares: its options, and the run from data to saved adapter.

    data (preset or the user's files) -> tokenizer -> Encoded splits -> BERT + task head
    -> head | lora | full -> Trainer.fit (best checkpoint) -> test metrics -> files in --out

A task module (`classify`, `ner`, `similarity`) supplies a `Task`: how to read its data, turn
examples into Encoded sets, which model class to build and how to score predictions.
"""
import argparse
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

import minigrad
from minigrad.io import atomic_write_json
from minigrad.nn import lora
from models.bert import default_model_dir
from models.tokenizer import Tokenizer
from tasks.train import Trainer, prepare_model

# Learning rates measured on Rotten Tomatoes with MiniLM (benchmarks/RESULTS.md): a fresh head
# on frozen features wants a far larger step than adapters, and those than pretrained weights
# (head-only: 0.644 test accuracy after 3 epochs at 2e-3, 0.688 at 2e-2; LoRA: 0.824 at 5e-4).
DEFAULT_LR = {"head": 2e-2, "lora": 5e-4, "full": 5e-5}


@dataclass
class Task:
    name: str
    presets: tuple
    model_class: type
    metric: str                 # the validation metric early stopping maximises
    load: callable              # (args) -> tasks.data.Dataset
    encode: callable            # (tokenizer, examples, label_names, args) -> Encoded
    evaluate: callable          # (logits list, Encoded, examples, label_names) -> (metrics, report text)
    num_labels: callable = len  # (label_names) -> K
    init_head: callable = None  # (model, Encoded train) -> None: set up a fresh head from the data


def _positive_int(value):
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return n


def _non_negative_int(value):
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value} is not an integer >= 0")
    return n


def _non_negative_float(value):
    x = float(value)
    if not x >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value} is not a number >= 0")
    return x


def _fraction(value):
    x = float(value)
    if not 0 <= x <= 1:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value} is not a fraction between 0 and 1")
    return x


def build_parser(task_name, presets, default_preset, epochs=3, lr_defaults=DEFAULT_LR):
    p = argparse.ArgumentParser(prog=f"python -m tasks.{task_name}",
                                description=f"Fine-tune BERT for {task_name} with minigrad.")
    data = p.add_argument_group("data")
    data.add_argument("--preset", default=default_preset, choices=presets,
                      help="a bundled data set (ignored when --train is given)")
    data.add_argument("--train", help="your own training file")
    data.add_argument("--valid", help="your own validation file (needed with --train)")
    data.add_argument("--test", help="your own test file (optional)")
    data.add_argument("--max-train", type=_positive_int,
                      help="train on a seeded random subset of N examples")
    data.add_argument("--max-length", type=_positive_int, help="tokens per example, truncated beyond (default 128)")
    m = p.add_argument_group("method")
    m.add_argument("--method", choices=("head", "lora", "full"), default="lora")
    m.add_argument("--model", help="a BERT folder (config.json, model.safetensors, tokenizer.json); "
                                   "default: the bundled all-MiniLM-L6-v2")
    m.add_argument("--r", type=int, default=8, help="LoRA rank")
    m.add_argument("--alpha", type=float, default=16, help="LoRA alpha (scaling = alpha / r)")
    m.add_argument("--lora-dropout", type=float, default=0.0)
    m.add_argument("--target-modules", default="query,value",
                   help='comma-separated module names or suffixes, or "all-linear"')
    m.add_argument("--dropout", type=float, help="override the model's hidden and attention dropout")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=_positive_int, default=epochs)
    t.add_argument("--batch-size", type=_positive_int, default=16)
    t.add_argument("--lr", type=_non_negative_float, help=f"default per method: {lr_defaults}")
    t.add_argument("--warmup-ratio", type=_fraction, default=0.1,
                   help="fraction of the steps over which lr rises from 0 (0 to 1)")
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--max-grad-norm", type=_non_negative_float, default=1.0,
                   help="clip the global gradient norm to this (0: no clipping)")
    t.add_argument("--patience", type=_positive_int, default=2, help="stop after N epochs without improvement")
    t.add_argument("--seed", type=_non_negative_int, default=0)
    t.add_argument("--out", default=None, help="output folder (default runs/<task>-<method>)")
    t.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def finish_args(args, task_name, lr_defaults=DEFAULT_LR):
    if args.train and not args.valid:
        raise SystemExit(f"tasks.{task_name}: --train needs --valid as well")
    if not args.train and (args.valid or args.test):  # else the preset's splits, files unread
        raise SystemExit(f"tasks.{task_name}: --valid and --test go with --train; without it "
                         f"the preset {args.preset!r} gives every split")
    args.lr = lr_defaults[args.method] if args.lr is None else args.lr  # --lr 0 is 0
    args.max_length = args.max_length or 128
    args.out = args.out or os.path.join("runs", f"{task_name}-{args.method}")
    args.model = str(args.model or default_model_dir())
    return args


def _subset(examples, n, seed):
    if n is None or n >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng([seed, 1]).choice(len(examples), n, replace=False))
    return [examples[i] for i in keep]


def check_output_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"--out {path}: the output folder is not writable ({e.strerror})")


def run(task, args):
    """Fine-tune, evaluate and save; returns the metrics dict also written to metrics.json."""
    check_output_dir(args.out)
    minigrad.manual_seed(args.seed)
    t_start = time.perf_counter()
    data = task.load(args)
    train_examples = _subset(data.train, args.max_train, args.seed)
    tokenizer = Tokenizer.from_folder(args.model)
    enc = {split: task.encode(tokenizer, ex, data.label_names, args)
           for split, ex in (("train", train_examples), ("valid", data.valid), ("test", data.test))
           if ex is not None}
    overrides = {}
    if args.dropout is not None:
        overrides = {"hidden_dropout_prob": args.dropout, "attention_probs_dropout_prob": args.dropout}
    model = task.model_class.from_pretrained(args.model, num_labels=task.num_labels(data.label_names),
                                             **overrides)
    config = lora.LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.lora_dropout,
                             target_modules=args.target_modules,
                             task_type="SEQ_CLS" if task.name != "ner" else "TOKEN_CLS")
    if task.init_head is not None:
        task.init_head(model, enc["train"])
    prepare_model(model, args.method, config)
    print(f"{task.name}: {len(enc['train'])} train / {len(enc['valid'])} valid / "
          f"{len(enc['test']) if 'test' in enc else 0} test examples; method {args.method}; "
          + lora.trainable_report(model), file=sys.stderr)

    def evaluate(logits, split):  # split: "valid" or "test"
        return task.evaluate(logits, enc[split], getattr(data, split), data.label_names)

    trainer = Trainer(model, enc["train"], enc["valid"], args,
                      lambda logits, d: evaluate(logits, "valid")[0], task.metric, args.out, args.method)
    if args.resume:
        trainer.resume()
    state = trainer.fit()

    results = {"task": task.name, "method": args.method, "config": vars(args),
               "data": data.record, "train_examples": len(enc["train"]),
               "history": state["history"], "best_epoch": state["best_epoch"],
               "train_seconds": state["train_seconds"]}
    reports = []
    for split in ("valid", "test"):
        if split in enc:
            metrics, report = evaluate(trainer.predict(enc[split], split), split)
            results[split] = metrics
            reports.append(f"== {split} ==\n{report}")
            print(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                           if isinstance(v, float)))
    text = "\n".join(reports)
    print(text)
    paired = getattr(data.train[0], "text_pair", None) is not None  # NER sentences have none
    save_outputs(model, args, task, data.label_names, results, text, paired)
    results["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_json(os.path.join(args.out, "metrics.json"), results)
    return results


def save_outputs(model, args, task, label_names, results, report_text, paired=False):
    """report.txt, the adapter (LoRA) or model folder (head/full), and a loss-curve PNG.
    task.json says whether the model reads text pairs (tasks.predict then wants two texts)."""
    with open(os.path.join(args.out, "report.txt"), "w", encoding="utf-8") as f:
        f.write(report_text)
    info = {"task": task.name, "label_names": label_names, "max_length": args.max_length,
            "method": args.method, "base_model": args.model, "text_pair": paired}
    if args.method == "lora":
        folder = os.path.join(args.out, "adapter")
        lora.save_adapter(model, folder, base_model_name_or_path=args.model)
    else:
        folder = os.path.join(args.out, "model")
        lora.export_merged(model, folder, model.export_config(label_names or None))
        _copy_tokenizer(args.model, folder)
    atomic_write_json(os.path.join(folder, "task.json"), info)
    results["saved"] = folder
    print(f"saved {folder}", file=sys.stderr)
    plot_losses(results["history"], os.path.join(args.out, "loss.png"))


def _copy_tokenizer(src, dst):
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        path = os.path.join(src, name)
        if os.path.isfile(path):
            with open(path, "rb") as f_in:
                minigrad.io.atomic_write_bytes(os.path.join(dst, name), f_in.read())


def plot_losses(history, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return  # matplotlib is optional: the numbers are in metrics.json
    fig, ax = plt.subplots(figsize=(5, 3))
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.set_xlabel("epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

