"""A teaching job: train the small Transformer of `models/transformer.py` from scratch on a
synthetic sequence task, so a reader can watch every layer of minigrad learn in a few minutes.

    python -m tasks.toy                     # sort 10 digits, ~99.9% held-out token accuracy
    python -m tasks.toy --task reverse --steps 500 --quiet

The model is small (100k parameters, 1280 tokens a step), so splitting each matmul over threads
costs more than it saves, badly so on a busy machine: MINIGRAD_NUM_THREADS=1 is the fast setting.

Tasks (input: T random digits 0-9; target at each position t):
    sort     the t-th smallest input digit. The model has to count, for each digit value, how
             many smaller digits occur anywhere in the sequence: attention over the whole input.
    reverse  the input digit at position T-1-t: attention by position alone, learned quickly.

Every output is a per-position prediction, which is exactly what an encoder-only model gives.
The held-out sequences are drawn once and removed from every training batch, so held-out
accuracy measures generalisation, not memory. Chance is 10% accuracy and a loss of ln(10) = 2.30.

Shapes: B batch, T tokens (seq_len), K = 10 digit classes.
"""
import argparse
import math
import time

import minigrad as mg  # before NumPy, so MINIGRAD_NUM_THREADS reaches BLAS (kernels/threads.py)
import numpy as np
from minigrad import functional as F
from minigrad import optim
from models.transformer import Transformer, TransformerConfig

NUM_DIGITS = 10


def make_targets(x, task):
    """x (B, T) int digits -> targets (B, T) int."""
    if task == "sort":
        return np.sort(x, axis=1)
    if task == "reverse":
        return x[:, ::-1].copy()
    raise ValueError(f"toy: unknown task {task!r}, expected 'sort' or 'reverse'")


def sequence_ids(x):
    """Each row of digits read as one base-10 integer, so sets of sequences compare fast."""
    return x @ (NUM_DIGITS ** np.arange(x.shape[1], dtype=np.int64))


def sample(rng, n, seq_len, exclude=None):
    """n random digit sequences (n, T) int64, none of whose ids are in `exclude`."""
    x = rng.integers(0, NUM_DIGITS, size=(n, seq_len), dtype=np.int64)
    if exclude is not None:
        space = NUM_DIGITS ** seq_len  # a Python int: no overflow (the first test skips unique)
        if space <= len(exclude) and len(np.unique(exclude)) >= space:
            raise ValueError(f"toy: the held-out set holds all {space} sequences of length "
                             f"{seq_len}, leaving none to train on; lower --eval-size or raise "
                             "--seq-len")
        # Redraw the rare collisions with the held-out set instead of dropping them, so every
        # batch keeps its size.
        while (clash := np.isin(sequence_ids(x), exclude)).any():
            x[clash] = rng.integers(0, NUM_DIGITS, size=(int(clash.sum()), seq_len))
    return x


def evaluate(model, x, y, batch_size=512):
    """Mean loss and token accuracy of the model on (x, y), in eval mode and without a graph."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    with mg.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])  # (B, T, K)
            loss_sum += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
            correct += int((logits.data.argmax(-1) == y[i:i + batch_size]).sum())
    model.train(was_training)
    return loss_sum / y.size, correct / y.size


def train(task="sort", seq_len=10, steps=1500, batch_size=128, lr=3e-3, warmup=200,
          weight_decay=0.01, hidden_size=64, num_layers=2, num_heads=4, eval_size=2000,
          log_every=100, seed=0, quiet=False):
    """Train from scratch; returns (model, result), result a dict with the train loss (mean of the
    last 50 steps), held-out loss and token accuracy, steps and wall time (including the
    progress evaluations)."""
    mg.manual_seed(seed)  # the weights
    rng = np.random.default_rng(seed)  # the data
    x_eval = sample(np.random.default_rng(seed + 1), eval_size, seq_len)
    y_eval = make_targets(x_eval, task)
    held_out = sequence_ids(x_eval)

    config = TransformerConfig(vocab_size=NUM_DIGITS, num_labels=NUM_DIGITS, max_len=seq_len,
                               hidden_size=hidden_size, num_layers=num_layers,
                               num_heads=num_heads, ffn_size=4 * hidden_size)
    model = Transformer(config)
    opt = optim.AdamW(optim.param_groups_no_decay(model.named_parameters(), weight_decay), lr=lr)
    sched = optim.get_cosine_schedule_with_warmup(opt, warmup, steps)
    if not quiet:
        print(f"toy {task}: T={seq_len}, {model.num_parameters():,} parameters, {steps} steps of "
              f"{batch_size} sequences, chance: loss {math.log(NUM_DIGITS):.3f}, accuracy 0.100")

    start = time.perf_counter()
    losses = []
    for step in range(1, steps + 1):
        x = sample(rng, batch_size, seq_len, exclude=held_out)
        logits = model(x)  # (B, T, K)
        loss = F.cross_entropy(logits, make_targets(x, task))
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if not quiet and (step % log_every == 0 or step == steps):
            eval_loss, eval_acc = evaluate(model, x_eval, y_eval)
            print(f"step {step:5d} | lr {sched.get_last_lr()[0]:.2e} | train loss "
                  f"{np.mean(losses[-log_every:]):.4f} | held-out loss {eval_loss:.4f} "
                  f"acc {eval_acc:.4f} | {time.perf_counter() - start:6.1f}s", flush=True)
    seconds = time.perf_counter() - start

    eval_loss, eval_acc = evaluate(model, x_eval, y_eval)
    # one batch's loss is noisy; the mean of the last 50 says where training ended
    result = {"task": task, "steps": steps, "seconds": seconds, "eval_loss": eval_loss,
              "train_loss": float(np.mean(losses[-50:])), "eval_acc": eval_acc}
    if not quiet:
        print(f"done: {steps} steps in {seconds:.1f}s, held-out token accuracy {eval_acc:.4f} "
              f"on {eval_size} sequences")
    return model, result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tasks.toy", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("sort", "reverse"), default="sort")
    p.add_argument("--seq-len", type=int, default=10)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate after warmup")
    p.add_argument("--warmup", type=int, default=200, help="linear warmup steps, then cosine decay")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--eval-size", type=int, default=2000, help="held-out sequences")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="print only the final result")
    args = p.parse_args(argv)
    for name in ("seq_len", "steps", "batch_size", "hidden_size", "num_layers", "num_heads",
                 "eval_size", "log_every"):
        # 0 gave a nan loss (--batch-size, --steps) or a ZeroDivisionError (--eval-size, --log-every)
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    _, result = train(**{k: v for k, v in vars(args).items() if k != "quiet"}, quiet=args.quiet)
    if args.quiet:
        print(f"{result['task']}: {result['steps']} steps in {result['seconds']:.1f}s, train loss "
              f"{result['train_loss']:.4f}, held-out loss {result['eval_loss']:.4f}, token accuracy "
              f"{result['eval_acc']:.4f}")
    return result


if __name__ == "__main__":
    main()
