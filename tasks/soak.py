"""Soak test: does memory stay flat over thousands of LoRA training steps?

    python -m tasks.soak --steps 2000 [--warmup 20] [--batch-size 8] [--max-length 16]
                         [--max-growth 5] [--model FOLDER]

Runs `Trainer.train_step` (the step every task trains with: forward, loss, backward, clipping,
AdamW, schedule) on the real all-MiniLM-L6-v2 with LoRA adapters, over short Rotten Tomatoes
snippets. The resident set size is read from /proc/self/status after the warm-up steps (by then
the weights are paged in, the kernels compiled and the optimizer's buffers allocated) and again
at the end. A graph that is never freed, a saved tensor that outlives its backward or a cache
that grows per step shows up as growth; the command exits with status 1 when the growth exceeds
--max-growth percent. `make soak` runs 2,000 steps; tests/test_soak.py a short version.
"""
import argparse
import math
import resource
import sys
import tempfile
import time
import warnings

import numpy as np

import minigrad
from minigrad import kernels
from minigrad.nn import lora
from models.bert import default_model_dir
from models.bert_tasks import BertForSequenceClassification
from models.tokenizer import Tokenizer
from tasks.batching import encode_texts, make_batches
from tasks.cli import _non_negative_float, _non_negative_int, _positive_int
from tasks.data import rotten_tomatoes
from tasks.train import Trainer, prepare_model


def rss_mb():
    """Current resident set size in MB (VmRSS); the peak from getrusage where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # reported in kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def build_parser():
    p = argparse.ArgumentParser(prog="python -m tasks.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=_positive_int, default=2000, help="measured steps, after the warm-up")
    p.add_argument("--warmup", type=_non_negative_int, default=20, help="steps run before the first reading")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--max-length", type=_positive_int, default=16, help="tokens per example (truncated)")
    p.add_argument("--examples", type=_positive_int, default=512, help="training snippets, cycled")
    p.add_argument("--max-growth", type=_non_negative_float, default=5.0, help="allowed RSS growth in percent")
    p.add_argument("--report-every", type=_positive_int, default=500, help="print RSS every N steps")
    p.add_argument("--model", help="a BERT folder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    return p


def make_trainer(args, out_dir):
    """A LoRA Trainer on MiniLM over `args.examples` Rotten Tomatoes snippets."""
    minigrad.manual_seed(args.seed)
    folder = str(args.model or default_model_dir())
    data = rotten_tomatoes(seed=args.seed)
    texts = data.train[:args.examples]
    index = {name: i for i, name in enumerate(data.label_names)}
    with warnings.catch_warnings():  # most snippets exceed 16 tokens: truncation is the point
        warnings.filterwarnings("ignore", message="tokenizer: .* were truncated")
        train = encode_texts(Tokenizer.from_folder(folder), [e.text for e in texts],
                             [index[e.label] for e in texts], max_length=args.max_length)
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=len(data.label_names))
    prepare_model(model, "lora", lora.LoraConfig(r=8, lora_alpha=16))
    total = args.warmup + args.steps
    # the schedule spans the whole run, so the learning rate never reaches zero early
    trainer_args = argparse.Namespace(
        lr=5e-4, weight_decay=0.01, batch_size=args.batch_size, warmup_ratio=0.1,
        max_grad_norm=1.0, seed=args.seed, quiet=True,
        epochs=math.ceil(total / math.ceil(len(train) / args.batch_size)))
    return Trainer(model, train, train, trainer_args, None, "accuracy", out_dir, "lora")


def batches(trainer, seed):
    """Training batches without end, epoch after epoch, as Trainer.fit orders them."""
    epoch = 0
    while True:
        yield from make_batches(trainer.train.lengths, trainer.args.batch_size,
                                np.random.default_rng([seed, epoch]))
        epoch += 1


def main(argv=None):
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trainer(args, out_dir)
        stream = batches(trainer, args.seed)
        print(f"soak: LoRA on {args.model or 'all-MiniLM-L6-v2'}, batch {args.batch_size} x "
              f"<= {args.max_length} tokens, {args.warmup} warm-up + {args.steps} steps, "
              f"{kernels.get_num_threads()} threads, kernels {kernels.mode()}", flush=True)
        for _ in range(args.warmup):
            trainer.train_step(next(stream))
        start = rss_mb()
        print(f"step {0:6d}: RSS {start:8.1f} MB (after warm-up)", flush=True)
        t0, losses = time.perf_counter(), []
        for step in range(1, args.steps + 1):
            losses.append(trainer.train_step(next(stream))[0])
            if step % args.report_every == 0 and step != args.steps:
                print(f"step {step:6d}: RSS {rss_mb():8.1f} MB, loss {np.mean(losses[-50:]):.4f}",
                      flush=True)
        seconds = time.perf_counter() - t0
        end = rss_mb()
    growth = 100.0 * (end - start) / start
    print(f"step {args.steps:6d}: RSS {end:8.1f} MB, loss {np.mean(losses[-50:]):.4f}")
    print(f"RSS start {start:.1f} MB, end {end:.1f} MB, growth {growth:+.2f}% "
          f"(limit {args.max_growth:g}%); {args.steps} steps in {seconds:.1f} s "
          f"({1000 * seconds / max(args.steps, 1):.0f} ms/step)")
    if growth > args.max_growth:
        print(f"soak: FAILED, RSS grew {growth:.2f}% > {args.max_growth:g}%", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
