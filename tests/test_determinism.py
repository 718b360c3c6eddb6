"""Determinism (issue 8): the same seed gives bit-identical losses over 100 training steps, and
another seed gives other losses.

Everything random in a run flows from `minigrad.manual_seed`: weight init, dropout masks and the
data the test draws. The model is a tiny BERT (2 layers, width 32) with dropout 0.1 on hidden
states and attention probabilities, so the dropout stream is exercised in every step, trained in
full with AdamW, warmup and clipping, on both kernel paths.
"""
import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels, optim
from models.bert import BertConfig
from models.bert_tasks import BertForSequenceClassification

STEPS = 100


@pytest.fixture(autouse=True)
def one_thread():
    """Both runs of a comparison use the same thread count; one, because tiny shapes gain nothing
    from threads and on a loaded machine Numba's parallel kernels wait for cores far longer than
    they compute (40x slower measured with 2 threads at load 10)."""
    previous = kernels.get_num_threads()
    kernels.set_num_threads(1)
    yield
    kernels.set_num_threads(previous)


def losses_of_a_run(seed, steps=STEPS):
    """Seed, build, train `steps` steps on random batches (B 8, T 12) labelled by their first
    token; the loss of each step."""
    mg.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=16,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = BertForSequenceClassification(config, num_labels=3)
    model.train()
    opt = optim.AdamW(optim.param_groups_no_decay(list(model.named_parameters()), 0.01), lr=1e-3)
    schedule = optim.get_linear_schedule_with_warmup(opt, 10, steps)
    data_rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        ids = data_rng.integers(1, config.vocab_size, (8, 12))
        mask = (np.arange(12)[None, :] < data_rng.integers(4, 13, (8, 1))).astype(np.int64)
        labels = ids[:, 0] % 3  # learnable, so the loss falls
        loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optim.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        opt.zero_grad()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.parametrize("path", ["fused", "ref"])
def test_same_seed_same_losses_for_100_steps(path):
    with kernels.use(path):
        first = losses_of_a_run(seed=1)
        second = losses_of_a_run(seed=1)
    assert np.isfinite(first).all()
    assert first[-10:].mean() < first[:10].mean()  # it trains, so the comparison means something
    np.testing.assert_array_equal(first, second)  # bit for bit, not approximately


def test_another_seed_gives_other_losses():
    a, b = losses_of_a_run(seed=1, steps=20), losses_of_a_run(seed=2, steps=20)
    assert not np.any(a == b)


def test_dropout_draws_from_the_seeded_generator():
    """The same seed repeats the masks; the next call in one stream draws a fresh one."""
    x = mg.ones(4, 64)
    mg.manual_seed(7)
    first, second = mg.functional.dropout(x, 0.5).data, mg.functional.dropout(x, 0.5).data
    mg.manual_seed(7)
    np.testing.assert_array_equal(mg.functional.dropout(x, 0.5).data, first)
    assert not np.array_equal(first, second)
