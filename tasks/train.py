"""The training loop shared by every task: AdamW, warmup + linear decay, clipping, bucketed
batches, evaluation each epoch, early stopping with the best weights kept, and checkpoints that
let a killed run resume and finish exactly as an uninterrupted one.

The three methods differ only in what trains:
    full  every weight;
    lora  adapters A, B on the targeted Linear layers, plus the task head (minigrad.nn.lora);
    head  the task head alone on encoder features computed ONCE (no_grad) and cached, so every
          epoch after the first costs only the head.
"""
import math
import os
import sys
import time

import numpy as np
from tqdm import tqdm

import minigrad
from minigrad import optim
from minigrad.io import remove_temporaries
from minigrad.nn import lora
from tasks.batching import collate, make_batches
from tasks.checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"


def warmup_steps(warmup_ratio, total):
    """Steps of linear warmup: warmup_ratio x total rounded up, as Hugging Face's Trainer
    (a ratio of 0.1 over 55 steps warms 6). The torch references in benchmarks/ use it too."""
    return math.ceil(warmup_ratio * total)


def prepare_model(model, method, lora_config=None):
    """Set which parameters train for `method`; returns the model."""
    if method == "lora":
        lora.apply_lora(model, lora_config)
    elif method == "head":
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
    elif method == "full":
        model.requires_grad_(True)
    else:
        raise ValueError(f"unknown method {method!r}: expected head, lora or full")
    return model


def trainable_state(model):
    return {n: p.data for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state):
    own = dict(model.named_parameters())
    for name, arr in state.items():
        own[name].data[...] = arr


class Trainer:
    """Runs `fit()`: epochs of training, a validation pass after each, checkpoints, early stop.

    `evaluate_fn(logits_list, data) -> dict` turns the model's outputs on a split into metrics;
    `metric` names the key of that dict to maximise.
    """

    def __init__(self, model, train, valid, args, evaluate_fn, metric, out_dir, method):
        self.model, self.train, self.valid = model, train, valid
        self.args, self.evaluate_fn, self.metric = args, evaluate_fn, metric
        self.out_dir, self.method = out_dir, method
        os.makedirs(out_dir, exist_ok=True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.optimizer = optim.AdamW(optim.param_groups_no_decay(named, args.weight_decay), lr=args.lr)
        self.steps_per_epoch = math.ceil(len(train) / args.batch_size)
        total = self.steps_per_epoch * args.epochs
        self.scheduler = optim.get_linear_schedule_with_warmup(
            self.optimizer, warmup_steps(args.warmup_ratio, total), total)
        self.features = {}  # head-only: split name -> cached encoder features
        self.state = {"epoch": 0, "step": 0, "history": [], "best": None, "best_epoch": None,
                      "bad_epochs": 0, "train_seconds": 0.0}

    # ---- one step -----------------------------------------------------------------------------
    def forward(self, data, index, split):
        batch = collate(data, index)
        if self.method == "head":
            feats = self.cached_features(data, split)
            x = minigrad.Tensor(np.stack([feats[i] for i in index]) if batch["labels"].ndim == 1
                                else _pad_features(feats, index, batch["input_ids"].shape[1]), _copy=False)
            return self.model.head(x, batch["labels"]), batch
        out = self.model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                         labels=batch["labels"])
        return out, batch

    def train_step(self, index):
        out, batch = self.forward(self.train, index, "train")
        loss = out.loss
        if not np.isfinite(loss.item()):
            raise FloatingPointError(f"training: loss is {loss.item()} at step {self.state['step']} "
                                     f"(epoch {self.state['epoch']}); {self.locate_nonfinite(index)}; "
                                     "lower --lr or check the data")
        loss.backward()
        if self.args.max_grad_norm > 0:  # 0 turns clipping off, as in Hugging Face's Trainer
            optim.clip_grad_norm_(self.params, self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.state["step"] += 1
        return loss.item(), int(batch["attention_mask"].sum())

    def locate_nonfinite(self, index):
        """Replay a batch's forward under detect_anomaly to name the op that first made NaN/inf.
        Only ever run when training stops, so its cost and its dropout draws do not matter."""
        try:
            with minigrad.detect_anomaly(), minigrad.no_grad(), np.errstate(all="ignore"):
                self.forward(self.train, index, "train")
        except FloatingPointError as e:
            return str(e)
        return "no op reproduced it on replay"

    # ---- head-only feature cache ----------------------------------------------------------------
    def cached_features(self, data, split):
        """Encoder outputs for every example of a split, computed once with no graph."""
        if split not in self.features:
            was_training = self.model.training
            self.model.eval()
            token_level = isinstance(data.labels[0], np.ndarray)
            feats = [None] * len(data)
            with minigrad.no_grad():
                for index in make_batches(data.lengths, 64):
                    b = collate(data, index)
                    out = self.model.bert(b["input_ids"], b["attention_mask"], b["token_type_ids"],
                                          cls_only=not token_level)
                    for row, i in enumerate(index):
                        feats[i] = (out.last_hidden_state.data[row, :len(data.ids[i])].copy()
                                    if token_level else out.pooler_output.data[row].copy())
            self.model.train(was_training)
            self.features[split] = feats
        return self.features[split]

    # ---- evaluation --------------------------------------------------------------------------------
    def predict(self, data, split):
        """Logits for every example of `data`, in the data's order (eval mode, no graph); the
        model is left in the mode it was in."""
        was_training = self.model.training
        self.model.eval()
        logits = [None] * len(data)
        with minigrad.no_grad():
            for index in make_batches(data.lengths, self.args.batch_size * 2):
                out, batch = self.forward(data, index, split)
                for row, i in enumerate(index):
                    lg = out.logits.data[row]
                    logits[i] = lg[:len(data.ids[i])] if lg.ndim == 2 else lg
        self.model.train(was_training)
        return logits

    def evaluate(self, data, split):
        return self.evaluate_fn(self.predict(data, split), data)

    # ---- checkpoints --------------------------------------------------------------------------------
    def save(self):
        save_checkpoint(os.path.join(self.out_dir, CHECKPOINT), {
            "weights": trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": minigrad.get_rng().bit_generator.state,
            "trainer": self.state,
            "args": self.run_args(),
        })

    # what may change when a run is resumed: how long it goes on and how it reports (a new
    # --epochs gives the new run's schedule, as Hugging Face's Trainer does); anything else
    # would silently mix two runs' data, model or optimiser settings
    RESUMABLE_CHANGES = ("epochs", "patience", "quiet", "resume", "out")

    def run_args(self):
        return {k: v for k, v in sorted(vars(self.args).items())
                if k not in self.RESUMABLE_CHANGES and (v is None or isinstance(v, (str, int, float)))}

    def resume(self):
        self.remove_stale_temporaries()
        path = os.path.join(self.out_dir, CHECKPOINT)
        if not os.path.isfile(path):
            print(f"--resume: no checkpoint in {self.out_dir}; starting from scratch", file=sys.stderr)
            return
        ckpt = load_checkpoint(path)
        own = trainable_state(self.model)
        if set(ckpt["weights"]) != set(own) or any(ckpt["weights"][k].shape != own[k].shape for k in own):
            raise ValueError(f"--resume: {path} was written for another model or method "
                             f"({len(ckpt['weights'])} trainable tensors vs {len(own)} here)")
        saved_args, args = ckpt.get("args"), self.run_args()
        changed = {k: (saved_args.get(k), v) for k, v in args.items()
                   if saved_args is not None and saved_args.get(k) != v}
        if changed:
            raise ValueError(f"--resume: {path} was written with other settings; saved vs now: "
                             + ", ".join(f"{k} {old!r} vs {new!r}" for k, (old, new) in changed.items())
                             + " (only " + ", ".join(self.RESUMABLE_CHANGES[:3]) + " may change)")
        load_trainable_state(self.model, ckpt["weights"])
        self.optimizer.load_state_dict(ckpt["optimizer"])  # takes the keys JSON made strings
        self.scheduler.load_state_dict(ckpt["scheduler"])
        minigrad.get_rng().bit_generator.state = ckpt["rng"]
        self.state = ckpt["trainer"]
        print(f"resumed from {path} after epoch {self.state['epoch']} (step {self.state['step']})",
              file=sys.stderr)

    def remove_stale_temporaries(self):
        """A run killed while writing a checkpoint leaves its temporary file (minigrad.io's
        `.<name>.<random>.tmp`) beside the intact previous one; the resuming run owns the folder."""
        remove_temporaries(self.out_dir, (CHECKPOINT, BEST))

    # ---- the loop ----------------------------------------------------------------------------------
    def fit(self):
        args = self.args
        while self.state["epoch"] < args.epochs and self.state["bad_epochs"] < args.patience:
            epoch = self.state["epoch"]
            # the data order depends only on (seed, epoch): a resumed run sees the same batches
            batches = make_batches(self.train.lengths, args.batch_size,
                                   np.random.default_rng([args.seed, epoch]))
            t0, losses, tokens = time.perf_counter(), [], 0
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                       disable=args.quiet, file=sys.stderr, mininterval=1.0)
            self.model.train()
            for index in bar:
                loss, n_tok = self.train_step(index)
                losses.append(loss)
                tokens += n_tok
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}",
                                tok_s=f"{tokens / (time.perf_counter() - t0):.0f}", refresh=False)
            seconds = time.perf_counter() - t0
            metrics = self.evaluate(self.valid, "valid")
            self.state["train_seconds"] += seconds
            record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "seconds": seconds,
                      "tokens_per_second": tokens / seconds, "valid": metrics}
            self.state["history"].append(record)
            print(f"epoch {epoch + 1}: train loss {record['train_loss']:.4f}, valid "
                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)),
                  file=sys.stderr)
            value, best = metrics[self.metric], self.state["best"]
            # nan (a correlation of constant predictions) is below any number; nan > x is False,
            # so a nan first epoch would otherwise stay the best whatever came after it
            if best is None or value > best or (math.isnan(best) and not math.isnan(value)):
                self.state.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
                save_checkpoint(os.path.join(self.out_dir, BEST), {"weights": trainable_state(self.model)})
            else:
                self.state["bad_epochs"] += 1
            self.state["epoch"] = epoch + 1
            self.save()
        best = load_checkpoint(os.path.join(self.out_dir, BEST))
        load_trainable_state(self.model, best["weights"])
        return self.state


def _pad_features(feats, index, T):
    """Token-level cached features (NER, head-only): (B, T, C) zero-padded."""
    C = feats[index[0]].shape[-1]
    x = np.zeros((len(index), T, C), np.float32)
    for b, i in enumerate(index):
        x[b, :len(feats[i])] = feats[i]
    return x

