"""LoRA adapters (minigrad/nn/lora.py): the invariants PEFT keeps, on a small random BERT.

An untrained adapter changes nothing; only A, B and the head train; the layer computes
x W^T + b + scaling x A^T B^T; merge/unmerge fold the delta in and out; target names match as
PEFT's do; a saved adapter holds no frozen weight and loads back to identical logits.
"""
import json
import math
import os

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad.kernels import matmul as kmatmul
from minigrad.nn import Linear, lora
from minigrad.testing import gradcheck
from models.bert import BertConfig
from models.bert_tasks import BertForSequenceClassification

# float32 merged vs unmerged: W + s B A is rounded once more than W x + s B (A x); over a few
# layers of width 32 that stays near 1e-6, so the 1e-5 bound is the test's.
MERGE_ATOL = 1e-5
# float32 fused op vs the composed graph: the fused op adds the bias and the rank-r term onto
# x W^T in another order (and dx's two terms in place, not in the engine's sum), so results
# differ in the last bit or two, ~5e-7 on these O(1) values; 1e-5 keeps a 20x margin and still
# catches a lost or doubled scaling or bias, which moves them by O(0.1).
FUSED_TOL = dict(rtol=1e-5, atol=1e-5)


def tiny_config(dropout=0.0):
    return BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64,
                      hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)


def tiny_model(dtype=np.float32, seed=0, num_labels=3):
    mg.manual_seed(seed)
    model = BertForSequenceClassification(tiny_config(), num_labels=num_labels)
    if dtype != np.float32:
        for p in model.parameters():
            p.data = p.data.astype(dtype)
    return model.eval()


def batch(B=3, T=7, seed=0):
    """Padded ids (B, T) int64 and attention mask: row 1 is two tokens shorter."""
    ids = np.random.default_rng(seed).integers(1, 100, (B, T))
    mask = np.ones_like(ids)
    mask[1, T - 2:] = 0
    ids[1, T - 2:] = 0
    return ids, mask


def logits(model, ids, mask):
    with mg.no_grad():
        return model(ids, mask).logits.data.copy()


def randomise_adapters(model, seed=1, scale=0.1):
    """Give every lora_B (zero at init) and the head random values, so the adapter does something."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if ".lora_B." in name or name.startswith("classifier."):
            p.data[...] = scale * rng.standard_normal(p.shape)


# ---- the layer -------------------------------------------------------------------------------
def test_untrained_adapter_changes_nothing():
    model = tiny_model()
    ids, mask = batch()
    before = logits(model, ids, mask)
    lora.apply_lora(model, lora.LoraConfig(r=4, target_modules="all-linear"))
    assert len(lora.lora_layers(model)) == 13  # 6 per layer, and the pooler
    np.testing.assert_array_equal(logits(model, ids, mask), before)


def test_untrained_adapter_in_a_sequential_changes_nothing():
    """apply_lora swaps layers by name; each must stay at its place in the Sequential."""
    mg.manual_seed(0)
    model = mg.nn.Sequential(Linear(4, 8), mg.nn.Tanh(), Linear(8, 2))
    x = mg.randn(3, 4)
    before = model(x).data
    lora.apply_lora(model, lora.LoraConfig(r=2, target_modules="all-linear", modules_to_save=()))
    assert [type(m).__name__ for m in model] == ["LoraLinear", "Tanh", "LoraLinear"]
    np.testing.assert_array_equal(model(x).data, before)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_linear_matches_formula(use_rslora):
    rng = np.random.default_rng(0)
    layer = LoraLinearF64 = lora.LoraLinear(Linear(5, 7, dtype=np.float64), r=4, lora_alpha=8,
                                            use_rslora=use_rslora)
    assert LoraLinearF64.lora_A.weight.shape == (4, 5) and layer.lora_B.weight.shape == (7, 4)
    layer.lora_B.weight.data[...] = rng.standard_normal((7, 4))
    x = rng.standard_normal((2, 3, 5))
    W, b = layer.base_layer.weight.data, layer.base_layer.bias.data
    A, B = layer.lora_A.weight.data, layer.lora_B.weight.data
    scaling = 8 / math.sqrt(4) if use_rslora else 8 / 4
    assert layer.scaling == scaling
    expected = x @ W.T + b + scaling * (x @ A.T @ B.T)
    y = layer(mg.Tensor(x))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)


def test_modules_to_save_as_a_string_is_one_name():
    """modules_to_save="classifier" names the head, as target_modules="query" names a layer."""
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4, modules_to_save="classifier"))
    assert model.peft_config.modules_to_save == ("classifier",)
    assert model.classifier.weight.requires_grad
    assert "base_model.model.classifier.weight" in lora.adapter_state_dict(model)
    # None is PEFT's default: a classification task still trains and saves its head
    assert lora.LoraConfig(modules_to_save=None).modules_to_save == ("classifier",)
    assert lora.LoraConfig(modules_to_save=None, task_type="FEATURE_EXTRACTION").modules_to_save == ()
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4, modules_to_save=None))
    assert model.classifier.weight.requires_grad


def test_lora_config_scaling_and_validation():
    assert lora.LoraConfig(r=8, lora_alpha=16).scaling == 2.0
    assert lora.LoraConfig(r=16, lora_alpha=16, use_rslora=True).scaling == 4.0
    assert lora.LoraConfig(target_modules="query, value").target_modules == ("query", "value")
    with pytest.raises(ValueError, match="r must be a positive integer"):
        lora.LoraConfig(r=0)
    with pytest.raises(TypeError, match="can only wrap Linear"):
        lora.LoraLinear(lora.Dropout(0.1), r=2, lora_alpha=2)


def test_gradcheck_lora_a_and_b():
    rng = np.random.default_rng(0)
    layer = lora.LoraLinear(Linear(4, 3, dtype=np.float64), r=2, lora_alpha=4)
    layer.lora_B.weight.data[...] = rng.standard_normal((3, 2))  # else dA would be zero
    x = mg.Tensor(rng.standard_normal((2, 5, 4)), requires_grad=True)
    A, B = layer.lora_A.weight, layer.lora_B.weight
    assert gradcheck(lambda x, A, B: layer(x), [x, A, B])
    assert A.grad.dtype == np.float64 and B.grad.dtype == np.float64
    assert layer.base_layer.weight.grad is not None  # a plain layer: the base still trains here


def lora_layer(cin=48, cout=40, r=8, lora_dropout=0.0, seed=0):
    """A float32 LoraLinear with a nonzero B, so the adapter acts and dA is nonzero."""
    mg.manual_seed(seed)
    layer = lora.LoraLinear(Linear(cin, cout), r=r, lora_alpha=16, lora_dropout=lora_dropout)
    layer.lora_B.weight.data[...] = 0.1 * np.random.default_rng(seed).standard_normal((cout, r))
    return layer


def composed(layer, x):
    """The layer as five ops (Linear, Linear, Mul, Linear, Add): what forward ran before the fused op."""
    base = layer.base_layer
    return (F.linear(x, base.weight, base.bias)
            + F.linear(F.linear(x, layer.lora_A.weight) * layer.scaling, layer.lora_B.weight))


def op_names(y):
    return {node.fn.__name__ for node in mg.function.graph_nodes(y._node)}


@pytest.mark.parametrize("trainable", [(), ("bias",), ("bias", "weight")])
def test_fused_op_matches_composed_graph(trainable):
    layer = lora_layer()
    layer.base_layer.requires_grad_(False)
    for name in trainable:
        getattr(layer.base_layer, name).requires_grad_(True)
    params = [layer.lora_A.weight, layer.lora_B.weight] + [getattr(layer.base_layer, n) for n in trainable]
    rng = np.random.default_rng(1)
    x_data = rng.standard_normal((3, 17, 48)).astype(np.float32)
    dy = mg.tensor(rng.standard_normal((3, 17, 40)).astype(np.float32))
    results = {}
    for path in ("fused", "composed"):
        for p in layer.parameters():
            p.grad = None
        x = mg.tensor(x_data, requires_grad=True)
        y = layer(x) if path == "fused" else composed(layer, x)
        assert ("LoraLinear" in op_names(y)) == (path == "fused")
        (y * dy).sum().backward()
        results[path] = [y.data, x.grad] + [p.grad for p in params]
    for fused, ref in zip(results["fused"], results["composed"]):
        assert fused.dtype == np.float32 and fused.shape == ref.shape
        np.testing.assert_allclose(fused, ref, **FUSED_TOL)
    assert np.abs(results["fused"][0] - F.linear(mg.tensor(x_data), layer.base_layer.weight,
                                                 layer.base_layer.bias).data).max() > 0.1  # B acts


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_base_weight_costs_no_dw(monkeypatch, frozen):
    """Under LoRA the backward runs no (out, in) product for the frozen weight, and leaves its
    .grad None; a trainable base weight gets one, so the check can fail."""
    layer = lora_layer(cin=48, cout=40)
    layer.base_layer.weight.requires_grad_(not frozen)
    x = mg.tensor(np.random.default_rng(2).standard_normal((2, 5, 48)).astype(np.float32),
                  requires_grad=True)
    y = layer(x)
    products = []
    matmul = kmatmul.matmul
    monkeypatch.setattr(kmatmul, "matmul", lambda a, b: products.append((a.shape[-2], b.shape[-1]))
                        or matmul(a, b))
    y.sum().backward()
    assert ((40, 48) in products) == (not frozen)
    assert (layer.base_layer.weight.grad is None) == frozen
    assert all(t.grad is not None for t in (x, layer.lora_A.weight, layer.lora_B.weight))


def test_fused_path_only_without_active_dropout():
    """Dropout active in training puts a mask between x and A: the composed graph. In eval mode
    the layer is the one fused op; merged, it is the base Linear alone."""
    layer = lora_layer(lora_dropout=0.3)
    x = mg.tensor(np.ones((2, 48), np.float32), requires_grad=True)
    names = op_names(layer.train()(x))
    assert "Dropout" in names and "LoraLinear" not in names
    assert op_names(layer.eval()(x)) == {"LoraLinear"}
    layer.merge()
    assert op_names(layer(x)) == {"Linear"}


def test_merge_unmerge():
    model = tiny_model()
    ids, mask = batch()
    lora.apply_lora(model, lora.LoraConfig(r=4, target_modules=("query", "value", "intermediate.dense")))
    randomise_adapters(model, scale=0.3)
    base = {n: p.data.copy() for n, p in model.named_parameters() if ".base_layer." in n}
    unmerged = logits(model, ids, mask)
    assert np.abs(unmerged - logits(tiny_model(), ids, mask)).max() > 1e-3  # the adapter acts

    lora.merge_lora(model)
    assert all(m.merged for _, m in lora.lora_layers(model))
    changed = [n for n, p in model.named_parameters() if n in base and not np.array_equal(p.data, base[n])]
    assert sorted(changed) == sorted(n for n in base if n.endswith(".weight"))  # weights, not biases
    np.testing.assert_allclose(logits(model, ids, mask), unmerged, atol=MERGE_ATOL, rtol=0)
    lora.merge_lora(model)  # merging twice is a no-op
    np.testing.assert_allclose(logits(model, ids, mask), unmerged, atol=MERGE_ATOL, rtol=0)

    lora.unmerge_lora(model)
    for n, p in model.named_parameters():
        if n in base:
            np.testing.assert_allclose(p.data, base[n], atol=1e-6, rtol=0)
    np.testing.assert_allclose(logits(model, ids, mask), unmerged, atol=MERGE_ATOL, rtol=0)


# ---- which parameters train ------------------------------------------------------------------
def test_only_adapters_and_head_train():
    model = tiny_model(np.float64).train()
    lora.apply_lora(model, lora.LoraConfig(r=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n or n.startswith("classifier.")
                             for n in trainable)
    assert {"classifier.weight", "classifier.bias"} <= set(trainable)
    assert len([n for n in trainable if ".lora_" in n]) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)

    ids, mask = batch()
    out = model(ids, mask, labels=np.array([0, 1, 2]))
    out.loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == np.float64, n
            if ".lora_A." not in n:  # B is zero at init, so dA is zero; the rest is not
                assert np.abs(p.grad).max() > 0, n
        else:
            assert p.grad is None, f"{n} is frozen but received a gradient"


def test_apply_lora_twice_is_refused():
    model = lora.apply_lora(tiny_model(), lora.LoraConfig())
    with pytest.raises(ValueError, match="already has LoRA"):
        lora.apply_lora(model, lora.LoraConfig())


# ---- target_modules --------------------------------------------------------------------------
def targets_of(target_modules):
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=2, target_modules=target_modules))
    return [n for n, _ in lora.lora_layers(model)]


def test_target_modules_matching():
    qv = targets_of("query,value")
    assert qv == [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]
    assert targets_of(["value", "query"]) == qv
    assert targets_of("attention.output.dense") == [f"bert.encoder.layer.{i}.attention.output.dense"
                                                     for i in range(2)]
    assert targets_of("intermediate.dense") == [f"bert.encoder.layer.{i}.intermediate.dense"
                                                 for i in range(2)]
    # a suffix matches at a dot boundary: "output.dense" is both the attention output and the FFN's
    assert len(targets_of("output.dense")) == 4
    assert targets_of("bert.encoder.layer.1.attention.self.key") == ["bert.encoder.layer.1.attention.self.key"]
    everything = targets_of("all-linear")
    assert "classifier" not in everything and len(everything) == 13
    assert targets_of(("classifier", "query")) == [n for n in qv if n.endswith("query")]  # never the head


def test_a_regex_matches_whole_names_as_in_peft():
    # PEFT reads a string target_modules as a regex on the full module name
    config = lora.LoraConfig.from_peft_dict({"r": 2, "lora_alpha": 4,
                                             "target_modules": r".*\.layer\.1\..*(query|value)"})
    model = lora.apply_lora(tiny_model(), config)
    assert [n for n, _ in lora.lora_layers(model)] == [
        "bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.value"]
    assert config.to_peft_dict()["target_modules"] == r".*\.layer\.1\..*(query|value)"


@pytest.mark.parametrize("field, value", [("alpha_pattern", {"value": 32}), ("rank_pattern", {"query": 4}),
                                          ("use_dora", True), ("layers_to_transform", [0])])
def test_adapter_settings_minigrad_lacks_are_refused(tmp_path, field, value):
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query"],
              "alpha_pattern": {}, "layers_to_transform": None, field: value}
    with pytest.raises(ValueError, match=f"adapter_config.json: sets {{'{field}'"):
        lora.LoraConfig.from_peft_dict(config)


def test_load_adapter_into_a_merged_model(tmp_path):
    ids, mask = batch()
    source = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4, lora_alpha=8))
    randomise_adapters(source)
    want = logits(source, ids, mask)
    lora.save_adapter(source, tmp_path)
    pristine = tiny_model().bert.encoder.layer[0].attention.self.query.weight.data.copy()

    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4, lora_alpha=8))
    randomise_adapters(model, seed=7)
    lora.merge_lora(model)
    lora.load_adapter(model, tmp_path)  # replaces the merged adapter, not adds to it
    np.testing.assert_allclose(logits(model, ids, mask), want, atol=1e-5)
    lora.unmerge_lora(model)
    base = model.bert.encoder.layer[0].attention.self.query.base_layer.weight.data
    np.testing.assert_allclose(base, pristine, atol=1e-6)


@pytest.mark.parametrize("bad", ["quer", "dense.weight", ("LayerNorm",), "classifier"])
def test_no_matching_target_is_a_clear_error(bad):
    model = tiny_model()
    with pytest.raises(ValueError, match="no Linear module matches target_modules") as e:
        lora.apply_lora(model, lora.LoraConfig(target_modules=bad))
    assert "attention.self.query" in str(e.value)  # names some real candidates
    assert not hasattr(model, "peft_config") or model.peft_config is None
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen


# ---- saving and loading ----------------------------------------------------------------------
def test_save_adapter_holds_only_adapter_and_head(tmp_path):
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4, lora_alpha=8))
    randomise_adapters(model)
    lora.save_adapter(model, tmp_path, base_model_name_or_path="tiny")
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapter_model.safetensors"]

    saved = mg.io.load_file(tmp_path / "adapter_model.safetensors")
    expected = {f"base_model.model.bert.encoder.layer.{i}.attention.self.{m}.lora_{ab}.weight"
                for i in range(2) for m in ("query", "value") for ab in "AB"}
    expected |= {"base_model.model.classifier.weight", "base_model.model.classifier.bias"}
    assert set(saved) == expected
    n_values = sum(v.size for v in saved.values())
    assert n_values == model.num_parameters(trainable_only=True) == 8 * 4 * 32 + 3 * 32 + 3
    # no frozen weight hides in the file: its size is the values plus a small header
    size = os.path.getsize(tmp_path / "adapter_model.safetensors")
    assert 4 * n_values < size < 4 * n_values + 4096
    assert size < 4 * model.num_parameters() / 5

    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8, 0.0)
    assert sorted(config["target_modules"]) == ["query", "value"]
    assert config["modules_to_save"] == ["classifier"]
    assert config["base_model_name_or_path"] == "tiny"
    for key in ("bias", "fan_in_fan_out", "use_rslora", "init_lora_weights", "inference_mode"):
        assert key in config


def test_load_adapter_gives_identical_logits(tmp_path):
    ids, mask = batch()
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4, lora_alpha=8, target_modules="query,key,value"))
    randomise_adapters(model)
    for _, m in lora.lora_layers(model):  # A too, so a wrong A/B pairing would show
        m.lora_A.weight.data[...] = np.random.default_rng(5).standard_normal(m.lora_A.weight.shape)
    want = logits(model, ids, mask)
    lora.save_adapter(model, tmp_path)

    fresh = tiny_model()  # same base weights (same seed), no adapter yet
    assert np.abs(logits(fresh, ids, mask) - want).max() > 1e-3
    lora.load_adapter(fresh, tmp_path)
    assert fresh.peft_config.r == 4 and fresh.peft_config.scaling == 2.0
    np.testing.assert_array_equal(logits(fresh, ids, mask), want)
    # and into a model that already has the same adapter shape
    again = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4, lora_alpha=8, target_modules="value,key,query"))
    lora.load_adapter(again, tmp_path)
    np.testing.assert_array_equal(logits(again, ids, mask), want)


@pytest.mark.parametrize("other", [dict(r=2), dict(target_modules="query,key"), dict(lora_alpha=32)])
def test_mismatching_adapter_is_refused(tmp_path, other):
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4))
    lora.save_adapter(model, tmp_path)
    target = lora.apply_lora(tiny_model(), lora.LoraConfig(**{"r": 4, **other}))
    with pytest.raises(ValueError, match="load_adapter"):
        lora.load_adapter(target, tmp_path)


def test_adapter_for_another_head_or_width_is_refused(tmp_path):
    model = lora.apply_lora(tiny_model(num_labels=3), lora.LoraConfig(r=4))
    lora.save_adapter(model, tmp_path)
    with pytest.raises(ValueError, match="shape mismatch.*classifier"):
        lora.load_adapter(tiny_model(num_labels=5), tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        lora.load_adapter(tiny_model(), tmp_path / "nowhere")


def test_save_adapter_needs_adapters(tmp_path):
    with pytest.raises(ValueError, match="apply_lora first"):
        lora.save_adapter(tiny_model(), tmp_path)


def test_merged_state_dict_and_export(tmp_path):
    ids, mask = batch()
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4))
    randomise_adapters(model, scale=0.3)
    want = logits(model, ids, mask)
    merged = lora.merged_state_dict(model)
    plain = tiny_model()
    assert set(merged) == set(plain.state_dict())  # the base model's own key names
    lora.export_merged(model, tmp_path, model.export_config(["a", "b", "c"]))
    reloaded = BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    assert reloaded.num_labels == 3
    np.testing.assert_allclose(logits(reloaded, ids, mask), want, atol=MERGE_ATOL, rtol=0)
    assert not any(m.merged for _, m in lora.lora_layers(model))  # exporting leaves the model as it was


def test_trainable_report_format():
    model = lora.apply_lora(tiny_model(), lora.LoraConfig(r=4))
    trainable = 2 * 2 * (4 * 32 + 32 * 4) + 3 * 32 + 3
    total = model.num_parameters()
    report = lora.trainable_report(model)
    assert report == (f"trainable params: {trainable:,} || all params: {total:,} || "
                      f"trainable%: {100 * trainable / total:.4f}")
    assert report.startswith("trainable params: 1,123 || all params: ")
