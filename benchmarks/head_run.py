"""Head-only fine-tuning, a whole run: minigrad with its feature cache against torch's plain loop.

    python -m benchmarks.head_run [--epochs 3] [--threads 2] [--write]

Both train only the classifier of BertForSequenceClassification (MiniLM-L6) on Rotten Tomatoes
(the same seeded split, lr, batch size, schedule and epochs) and evaluate on the test split.
minigrad runs `tasks.classify --method head`, which computes the frozen encoder's features once
and trains the head on them; the torch side is the loop people write first: every step runs the
frozen encoder forward (under no_grad) and then the head. Each side runs in its own process;
the table gives wall time (data loading and tokenisation included) and test accuracy.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_USER_ENV = dict(os.environ)  # see benchmarks/finetune.py: torch must not inherit minigrad's OpenMP setting


def run_torch(epochs, lr, batch_size, seed):
    import torch  # first, before minigrad (OpenMP settings)
    import transformers

    import numpy as np

    from benchmarks.finetune import torch_adamw
    from models.bert import default_model_dir
    from models.tokenizer import Tokenizer
    from tasks.batching import collate, make_batches
    from tasks.classify import encode
    from tasks.data import rotten_tomatoes
    from tasks.train import warmup_steps

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    data = rotten_tomatoes(seed=seed)
    tok = Tokenizer.from_folder()
    args = argparse.Namespace(max_length=128)
    train, test = (encode(tok, ex, data.label_names, args) for ex in (data.train, data.test))
    model = transformers.BertForSequenceClassification.from_pretrained(str(default_model_dir()), num_labels=2)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("classifier."))
    opt = torch_adamw(torch, model, lr)  # the classifier's weight decays, its bias not (as minigrad's)
    steps = epochs * -(-len(train) // batch_size)
    sched = transformers.get_linear_schedule_with_warmup(opt, warmup_steps(0.1, steps), steps)
    tensors = lambda b: {k: torch.from_numpy(b[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}  # noqa: E731
    for epoch in range(epochs):
        model.train()
        model.bert.eval()  # frozen encoder: no dropout, as minigrad's cached features
        for index in make_batches(train.lengths, batch_size, np.random.default_rng([seed, epoch])):
            b = collate(train, index)
            with torch.no_grad():
                pooled = model.bert(**tensors(b)).pooler_output
            loss = torch.nn.functional.cross_entropy(model.classifier(model.dropout(pooled)),
                                                     torch.from_numpy(b["labels"]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.classifier.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
    model.eval()
    correct = 0
    with torch.no_grad():
        for index in make_batches(test.lengths, 64):
            b = collate(test, index)
            pred = model(**tensors(b)).logits.argmax(-1).numpy()
            correct += int((pred == b["labels"]).sum())
    return {"seconds": time.perf_counter() - t0, "test_accuracy": correct / len(test)}


def run_minigrad(epochs, lr, batch_size, seed):
    from tasks import classify

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = classify.main(["--method", "head", "--epochs", str(epochs), "--lr", str(lr),
                                "--batch-size", str(batch_size), "--seed", str(seed),
                                "--patience", str(epochs), "--quiet", "--out", out])
    return {"seconds": time.perf_counter() - t0, "test_accuracy": result["test"]["accuracy"]}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.head_run", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    job = (args.epochs, args.lr, args.batch_size, args.seed)
    if args.worker:
        print(json.dumps((run_torch if args.worker == "torch" else run_minigrad)(*job)))
        return
    n = str(args.threads)
    env = dict(_USER_ENV, MINIGRAD_NUM_THREADS=n, OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n)
    from benchmarks.finetune import torch_available

    sides = ("minigrad", "torch") if torch_available() else ("minigrad",)
    if len(sides) == 1:
        print("head_run: torch, transformers or peft is not installed; minigrad's side only "
              "(pip install torch==2.13.0 transformers peft)")
    results = {}
    for side in sides:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.head_run", "--worker", side,
                               *(argv if argv is not None else sys.argv[1:])],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"head_run {side} failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    m, t = results["minigrad"], results.get("torch")
    table = ("| side | wall time | test accuracy |\n|---|---|---|\n"
             f"| minigrad, features cached once | {m['seconds']:.0f} s | {m['test_accuracy']:.4f} |")
    if t is not None:
        table += (f"\n| torch + transformers, encoder forward every step | {t['seconds']:.0f} s | "
                  f"{t['test_accuracy']:.4f} |\n"
                  f"| ratio minigrad / torch | {m['seconds'] / t['seconds']:.2f} | |")
    print(table)
    if args.write:
        from benchmarks.finetune import append_results
        append_results(f"\n### Head-only, {args.epochs} epochs on Rotten Tomatoes, {n} threads: "
                       f"`python -m benchmarks.head_run`\n\n{table}\n")


if __name__ == "__main__":
    main()
