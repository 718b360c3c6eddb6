"""A shortened run of the teaching job `python -m tasks.toy`: the small Transformer of
`models/transformer.py`, trained from scratch, must learn to sort digits far beyond chance.

It runs the command line itself, in a subprocess with one thread (the job's fast setting, and
one that a busy machine cannot slow down by oversubscription), so what users type is what is
tested. Chance is a loss of ln(10) = 2.30 and 10% token accuracy; this run reaches about 0.3
and 98% in a few seconds, so the bounds below leave a wide margin and still fail if nothing
is learned.
"""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad import functional as F
from minigrad import optim
from models.transformer import Transformer, TransformerConfig
from tasks import toy

ROOT = Path(__file__).resolve().parents[1]


def test_toy_sort_learns_far_beyond_chance():
    args = ["--task", "sort", "--seq-len", "6", "--steps", "150", "--batch-size", "64",
            "--hidden-size", "32", "--warmup", "20", "--eval-size", "300", "--quiet"]
    env = dict(os.environ, MINIGRAD_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "tasks.toy", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    m = re.search(r"train loss ([\d.]+), held-out loss ([\d.]+), token accuracy ([\d.]+)", run.stdout)
    assert m, run.stdout
    train_loss, eval_loss, eval_acc = map(float, m.groups())
    assert train_loss < math.log(10) / 4 and eval_loss < math.log(10) / 4, run.stdout
    assert eval_acc > 0.8, run.stdout


def test_targets_and_held_out_split():
    x = np.array([[3, 1, 2, 1], [0, 9, 9, 5]])
    np.testing.assert_array_equal(toy.make_targets(x, "sort"), [[1, 1, 2, 3], [0, 5, 9, 9]])
    np.testing.assert_array_equal(toy.make_targets(x, "reverse"), [[1, 2, 1, 3], [5, 9, 9, 0]])
    # Two-digit sequences: 100 in all. With 90 held out, training batches can only use the
    # other 10, so a leak would show at once.
    rng = np.random.default_rng(0)
    held_out = toy.sequence_ids(toy.sample(rng, 400, 2))
    assert len(np.unique(held_out)) > 90
    train = toy.sample(rng, 1000, 2, exclude=held_out)
    assert train.shape == (1000, 2) and not np.isin(toy.sequence_ids(train), held_out).any()
    # all 10 one-digit sequences held out: sample redrew forever (`--seq-len 1` hung)
    held_out = toy.sequence_ids(np.arange(10).reshape(10, 1))
    with pytest.raises(ValueError, match="holds all 10 sequences of length 1"):
        toy.sample(rng, 4, 1, exclude=np.r_[held_out, held_out])


@pytest.mark.parametrize("option", ["--steps", "--batch-size", "--eval-size", "--log-every"])
def test_command_line_refuses_zero_sizes(option, capsys):
    """0 trained on empty batches with a nan loss (--batch-size), averaged no losses (--steps),
    or divided by zero (--eval-size, --log-every)."""
    with pytest.raises(SystemExit):
        toy.main([option, "0", "--quiet"])
    assert f"{option} must be a positive integer, got 0" in capsys.readouterr().err


def test_transformer_shapes_and_padding():
    for norm_first in (True, False):
        model = Transformer(TransformerConfig(vocab_size=12, num_labels=5, max_len=6,
                                              hidden_size=16, num_heads=2, ffn_size=32,
                                              norm_first=norm_first)).eval()
        assert (model.norm is not None) == norm_first
        ids = np.array([[1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 10]])
        mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6])
        logits = model(ids, mask)
        assert logits.shape == (2, 6, 5) and logits.dtype == np.float32
        ids[0, 4:] = 11  # padding is invisible to the real tokens
        np.testing.assert_allclose(model(ids, mask).data[0, :4], logits.data[0, :4], rtol=1e-5,
                                   atol=1e-6)
        names = [n for n, _ in model.named_parameters()]
        assert names[:3] == ["tok_emb.weight", "pos_emb.weight", "layers.0.attn.query.weight"]
    with pytest.raises(ValueError, match="Transformer: sequence length 7 exceeds max_len 6"):
        model(np.zeros((1, 7), np.int64))
    with pytest.raises(ValueError, match=r"Transformer: ids \(2, 0\) has no tokens"):
        model(np.zeros((2, 0), np.int64))
    for bad in (np.ones(6), np.ones((2, 5)), np.ones((3, 6))):  # as BertModel: name both shapes
        with pytest.raises(ValueError, match=r"Transformer: attention_mask has shape .* ids has \(2, 6\)"):
            model(ids, bad)


def test_transformer_trains_in_process():
    """One optimizer step lowers the loss on its own batch (the graph reaches every weight)."""
    mg.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=10, num_labels=10, max_len=5, hidden_size=16,
                                          num_heads=2, ffn_size=32))
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    x = toy.sample(np.random.default_rng(0), 32, 5)
    y = toy.make_targets(x, "sort")
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    assert F.cross_entropy(model(x), y).item() < loss.item()
