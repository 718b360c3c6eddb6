"""The PyTorch + transformers + PEFT side of our LoRA recipe, on our split and our batches.

    python -m benchmarks.peft_reference [--seed 0] [--epochs 3] [--max-train N] [--threads 1]
                                        [--out peft.json]

It measures the test accuracy that torch + PEFT reach with the recipe of
`python -m tasks.classify --preset rotten_tomatoes --method lora`, so the two numbers come from
the same 1,280 test examples. Everything but the framework is minigrad's own: the seeded split
(tasks.data.rotten_tomatoes(seed)), the --max-train subset, the tokeniser (max length 128), and
every training batch (tasks.batching.make_batches with rng [seed, epoch], same order, same
padding). On the torch side: transformers' BertForSequenceClassification from the bundled
MiniLM-L6 folder, PEFT LoRA r=8, alpha 16, no LoRA dropout on query and value (the classifier
trains in full, the pooler stays frozen, as in minigrad), model dropout 0.1, AdamW lr 5e-4
(betas 0.9/0.999, eps 1e-8) with weight decay 0.01 except on biases and norms (the very
grouping function our Trainer uses), warmup 10% then linear decay, clipping at 1.0.

After each epoch it scores the validation and the test split; as our Trainer, the best epoch is
the first one with the highest validation accuracy (patience 2), and it reports the test accuracy
of that epoch and of the last one. What still differs from minigrad: the random numbers (torch's
initialisation of the classifier and of LoRA's A, and its dropout masks).
"""
import torch  # first: importing minigrad sets OMP_WAIT_POLICY=PASSIVE, torch's OpenMP must not see it

import argparse
import json
import sys
import time

import numpy as np
import peft
import transformers

from minigrad.optim import param_groups_no_decay
from models.bert import default_model_dir
from models.tokenizer import Tokenizer
from tasks.batching import collate, make_batches
from tasks.classify import encode
from tasks.cli import _subset
from tasks.data import rotten_tomatoes
from tasks.train import warmup_steps

LR, WEIGHT_DECAY, WARMUP, MAX_GRAD_NORM, BATCH, PATIENCE = 5e-4, 0.01, 0.1, 1.0, 16, 2  # tasks.cli


def tensors(batch):
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def accuracy(model, data):
    """As Trainer.predict: eval mode, sorted-length batches of 2 x 16."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for index in make_batches(data.lengths, 2 * BATCH):
            b = collate(data, index)
            correct += int((model(**tensors(b)).logits.argmax(-1).numpy() == b["labels"]).sum())
    model.train()
    return correct / len(data)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.peft_reference", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0, help="split, subset, batch order and torch.manual_seed")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--max-train", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()

    folder = str(default_model_dir())
    data = rotten_tomatoes(seed=args.seed)
    tok = Tokenizer.from_folder(folder)
    enc_args = argparse.Namespace(max_length=128)
    train, valid, test = (encode(tok, ex, data.label_names, enc_args)
                          for ex in (_subset(data.train, args.max_train, args.seed), data.valid, data.test))

    model = transformers.BertForSequenceClassification.from_pretrained(folder, num_labels=2)
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"],
                             task_type="SEQ_CLS")
    model = peft.get_peft_model(model, config)
    named = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    print(f"{len(train)} train / {len(valid)} valid / {len(test)} test; "
          f"{sum(q.numel() for _, q in named):,} trainable in {len(named)} tensors", file=sys.stderr)
    opt = torch.optim.AdamW(param_groups_no_decay(named, WEIGHT_DECAY), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    total = args.epochs * -(-len(train) // BATCH)
    sched = transformers.get_linear_schedule_with_warmup(opt, warmup_steps(WARMUP, total), total)
    params = [q for _, q in named]

    history, best, bad = [], None, 0
    for epoch in range(args.epochs):
        if bad >= PATIENCE:
            break
        t0, losses = time.perf_counter(), []
        model.train()
        for index in make_batches(train.lengths, BATCH, np.random.default_rng([args.seed, epoch])):
            loss = model(**tensors(collate(train, index))).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                  "seconds": time.perf_counter() - t0,
                  "valid_accuracy": accuracy(model, valid), "test_accuracy": accuracy(model, test)}
        history.append(record)
        print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, valid accuracy "
              f"{record['valid_accuracy']:.4f}, test accuracy {record['test_accuracy']:.4f} "
              f"({record['seconds']:.0f} s)", flush=True)
        if best is None or record["valid_accuracy"] > best["valid_accuracy"]:
            best, bad = record, 0
        else:
            bad += 1

    result = {"seed": args.seed, "epochs": args.epochs, "max_train": args.max_train, "threads": args.threads,
              "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                           "peft": peft.__version__},
              "split": data.record, "train_examples": len(train), "history": history,
              "best_epoch": best["epoch"], "test_accuracy_best": best["test_accuracy"],
              "test_accuracy_last": history[-1]["test_accuracy"],
              "wall_seconds": time.perf_counter() - t_start}
    print(f"test accuracy {result['test_accuracy_best']:.4f} (best epoch {best['epoch']}), "
          f"{result['test_accuracy_last']:.4f} (last epoch); {result['wall_seconds']:.0f} s wall")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
