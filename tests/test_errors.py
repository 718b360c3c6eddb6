"""Bad input meets a clear error (issue 8): each case asserts the exception type AND that the
message names what is wrong and where (the module or op, the file and line, the step).

Grouped by layer, bottom to top: autodiff, ops, every public nn module, BERT, LoRA, model and
adapter folders, data files, the tokenizer on over-long text, the training loop, the command
line. Models are tiny random BERTs (width 16-32) unless the real MiniLM is the point.
"""
import argparse
import json
import os

import numpy as np
import pytest

import minigrad as mg
import minigrad.functional as F
from minigrad import nn
from minigrad.io import save_file
from minigrad.nn import lora
from models.bert import BertConfig, BertModel
from models.bert_tasks import BertForSequenceClassification
from tasks import cli, data
from tasks.batching import Encoded
from tasks.train import Trainer, prepare_model


def tiny_config(hidden=16, **overrides):
    fields = dict(vocab_size=30, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=2 * hidden, max_position_embeddings=8)
    return BertConfig(**{**fields, **overrides})


def ints(*shape):
    return mg.tensor(np.ones(shape, np.int64))


# ---- autodiff -----------------------------------------------------------------------------------
def test_backward_on_non_scalar_needs_a_gradient():
    x = mg.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"only for scalar outputs; this tensor has shape \(3,\)"):
        (x * 2).backward()


def test_backward_twice_without_retain_graph():
    x = mg.randn(3, requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"graph of Sum a second time.*retain_graph=True"):
        y.backward()


def test_backward_with_a_gradient_of_the_wrong_shape():
    x = mg.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"grad has shape \(2,\), tensor has shape \(3,\)"):
        (x * 2).backward(np.ones(2, np.float32))


def test_int_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match=r"only floating-point tensors can require grad, got int64"):
        mg.tensor([1, 2, 3], requires_grad=True)


# ---- ops: int tensors where floats are needed, shapes that do not fit ---------------------------
@pytest.mark.parametrize("op", ["softmax", "log_softmax", "exp", "log", "mean"])
def test_int_tensor_into_a_float_op(op):
    with pytest.raises(TypeError, match=rf"{op}: expected a floating-point tensor, got int64 "
                                        r"with shape \(2, 3\)"):
        getattr(F, op)(ints(2, 3))


def test_layer_norm_of_int_tensor():
    with pytest.raises(TypeError, match=r"layer_norm: expected a floating-point tensor, got int64"):
        F.layer_norm(ints(2, 4), (4,))


def test_matmul_inner_dimensions():
    with pytest.raises(ValueError, match=r"matmul: \(2, 3\) @ \(4, 2\): inner dimensions 3 and 4 differ"):
        mg.randn(2, 3) @ mg.randn(4, 2)


def test_cross_entropy_float_targets_and_out_of_range_targets():
    with pytest.raises(TypeError, match=r"cross_entropy: targets must be integers, got float64"):
        F.cross_entropy(mg.randn(2, 3), np.array([0.0, 1.0]))
    with pytest.raises(IndexError, match=r"cross_entropy: targets in \[0, 3\] out of range for 3 classes"):
        F.cross_entropy(mg.randn(2, 3), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"cross_entropy: logits \(2, 3\) and target \(3,\) do not match"):
        F.cross_entropy(mg.randn(2, 3), np.array([0, 1, 2]))


def test_binary_op_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) do not broadcast"):
        mg.randn(2, 3) + mg.randn(4)


# ---- every public nn module ---------------------------------------------------------------------
def test_linear_wrong_width():
    with pytest.raises(ValueError, match=r"Linear: input shape \(2, 5\) does not end in 4 features"):
        nn.Linear(4, 3)(mg.randn(2, 5))


def test_linear_int_input_and_plain_ndarray():
    with pytest.raises(TypeError, match=r"Linear: expected a float tensor, got int64 with shape \(2, 4\)"):
        nn.Linear(4, 3)(ints(2, 4))
    with pytest.raises(TypeError, match=r"Linear: expected a Tensor input, got ndarray"):
        nn.Linear(4, 3)(np.ones((2, 4), np.float32))


def test_linear_float64_input_into_float32_weights():
    with pytest.raises(TypeError, match=r"linear: input float64 \(2, 4\) and weight float32 \(3, 4\) "
                                        r"differ in dtype"):
        nn.Linear(4, 3)(mg.tensor(np.ones((2, 4))))


def test_embedding_float_ids_and_ids_out_of_range():
    emb = nn.Embedding(10, 4)
    with pytest.raises(TypeError, match=r"Embedding: ids must be integers, got float32 with shape \(3,\)"):
        emb(np.ones(3, np.float32))
    with pytest.raises(IndexError, match=r"Embedding: ids must lie in \[0, 10\), got values in \[1, 10\]"):
        emb(np.array([1, 10]))


def test_layer_norm_module_wrong_width_and_int_input():
    with pytest.raises(ValueError, match=r"LayerNorm: input shape \(2, 5\) does not end in 4 features"):
        nn.LayerNorm(4)(mg.randn(2, 5))
    with pytest.raises(TypeError, match=r"LayerNorm: expected a float tensor, got int64"):
        nn.LayerNorm(4)(ints(2, 4))


def test_attention_wrong_width_rank_and_mask():
    attn = nn.MultiHeadSelfAttention(8, 2)
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention: input shape \(2, 3, 6\) does not end in 8"):
        attn(mg.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention: expected x of shape \(B, T, C\), got \(3, 8\)"):
        attn(mg.randn(3, 8))
    with pytest.raises(ValueError, match=r"MultiHeadSelfAttention: .*mask \(2, 1, 1, 4\) does not broadcast"):
        attn(mg.randn(2, 3, 8), mask=np.zeros((2, 1, 1, 4), np.float32))
    with pytest.raises(ValueError, match=r"hidden_size 8 is not divisible by num_heads 3"):
        nn.MultiHeadSelfAttention(8, 3)


def test_encoder_layer_wrong_width_and_int_input():
    layer = nn.TransformerEncoderLayer(8, 2, 16)
    with pytest.raises(ValueError, match=r"TransformerEncoderLayer: input shape \(2, 3, 6\) does not end in 8"):
        layer(mg.randn(2, 3, 6))
    with pytest.raises(TypeError, match=r"TransformerEncoderLayer: expected a float tensor, got int64"):
        layer(ints(2, 3, 8))


def test_lora_linear_names_itself():
    layer = lora.LoraLinear(nn.Linear(4, 3), r=2, lora_alpha=4)
    with pytest.raises(ValueError, match=r"LoraLinear: input shape \(2, 5\) does not end in 4 features"):
        layer(mg.randn(2, 5))
    with pytest.raises(TypeError, match=r"LoraLinear: expected a float tensor, got int32"):
        layer(mg.tensor(np.ones((2, 4), np.int32)))
    with pytest.raises(TypeError, match=r"LoraLinear: can only wrap Linear, got LayerNorm"):
        lora.LoraLinear(nn.LayerNorm(4), r=2, lora_alpha=4)
    with pytest.raises(ValueError, match=r"LoraConfig: r must be a positive integer, got 0"):
        lora.LoraConfig(r=0)


# ---- BertModel ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ids, exc, match", [
    (np.ones((2, 3), np.float32), TypeError, r"input_ids must be a \(B, T\) integer array, got float32 \(2, 3\)"),
    (np.ones(3, np.int64), ValueError, r"input_ids must be a \(B, T\) integer array, got int64 \(3,\)"),
    (np.full((2, 3), 30), ValueError, r"input_ids values must lie in \[0, 30\), got \[30, 30\]"),
    (np.ones((2, 9), np.int64), ValueError, r"sequence length 9 exceeds max_position_embeddings 8"),
], ids=["float-ids", "1-d", "out-of-vocab", "too-long"])
def test_bert_bad_input_ids(ids, exc, match):
    with pytest.raises(exc, match="BertModel: " + match):
        BertModel(tiny_config())(ids)


def test_bert_mask_and_token_types_of_the_wrong_shape():
    model, ids = BertModel(tiny_config()), np.ones((2, 3), np.int64)
    with pytest.raises(ValueError, match=r"BertModel: attention_mask has shape \(2, 4\), input_ids has \(2, 3\)"):
        model(ids, attention_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"BertModel: token_type_ids values must lie in \[0, 2\)"):
        model(ids, token_type_ids=np.full((2, 3), 2))


# ---- model folders: missing files, another model size -------------------------------------------
def write_model_folder(folder, config, state):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    save_file(dict(state), str(folder / "model.safetensors"))
    return folder


def test_missing_config_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"BertConfig: no config.json at .*config.json"):
        BertModel.from_pretrained(str(tmp_path))


def test_missing_model_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    with pytest.raises(FileNotFoundError, match=rf"no model.safetensors in {tmp_path}"):
        BertForSequenceClassification.from_pretrained(str(tmp_path), num_labels=2)


def test_checkpoint_of_another_model_size(tmp_path):
    """A config.json saying width 32 beside weights of width 16: every mismatch listed."""
    folder = write_model_folder(tmp_path, tiny_config(32), BertModel(tiny_config(16)).state_dict())
    with pytest.raises(ValueError, match=rf"from_pretrained\({tmp_path}\): shape mismatches: .*"
                                         r"embeddings.word_embeddings.weight: checkpoint \(30, 16\) "
                                         r"vs model \(30, 32\)"):
        BertModel.from_pretrained(str(folder))


# ---- adapters ------------------------------------------------------------------------------------
def lora_model(hidden=16, r=4, targets="query,value"):
    model = BertForSequenceClassification(tiny_config(hidden), num_labels=2)
    return lora.apply_lora(model, lora.LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))


def test_adapter_of_another_rank(tmp_path):
    lora.save_adapter(lora_model(r=4), str(tmp_path))
    with pytest.raises(ValueError, match=r"adapter has r=4, .* the model has r=8"):
        lora.load_adapter(lora_model(r=8), str(tmp_path))


def test_adapter_of_another_model_size(tmp_path):
    lora.save_adapter(lora_model(hidden=16), str(tmp_path))
    model = BertForSequenceClassification(tiny_config(32), num_labels=2)
    with pytest.raises(ValueError, match=r"does not match the model: .*shape mismatches "
                                         r"\[.*lora_A.weight: file \(4, 16\) vs model \(4, 32\)"):
        lora.load_adapter(model, str(tmp_path))


def test_adapter_targeting_modules_the_model_lacks(tmp_path):
    lora.save_adapter(lora_model(), str(tmp_path))
    config = json.loads((tmp_path / lora.ADAPTER_CONFIG).read_text())
    config["target_modules"] = ["q_proj", "v_proj"]  # a LLaMA adapter, say
    (tmp_path / lora.ADAPTER_CONFIG).write_text(json.dumps(config))
    model = BertForSequenceClassification(tiny_config(), num_labels=2)
    with pytest.raises(ValueError, match=r"no Linear module matches target_modules=\('q_proj', 'v_proj'\)"):
        lora.load_adapter(model, str(tmp_path))


def test_adapter_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"no adapter_config.json in {tmp_path}"):
        lora.load_adapter(lora_model(), str(tmp_path))


# ---- data files ---------------------------------------------------------------------------------
def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_empty_csv_file(tmp_path):
    path = write(tmp_path / "train.csv", "")
    with pytest.raises(ValueError, match=r"train.csv: empty file \(expected a header with `text` and `label`\)"):
        data.read_classification_file(path)


def test_csv_with_header_only(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\n")
    with pytest.raises(ValueError, match=r"train.csv: no examples"):
        data.read_classification_file(path)


def test_empty_jsonl_file(tmp_path):
    path = write(tmp_path / "train.jsonl", "\n\n")
    with pytest.raises(ValueError, match=r"train.jsonl: empty file"):
        data.read_classification_file(path)


@pytest.mark.parametrize("header, missing", [("sentence,label", "'text'"), ("text,category", "'label'"),
                                             ("a,b", "'text' or 'label'")])
def test_csv_without_text_or_label(tmp_path, header, missing):
    path = write(tmp_path / "train.csv", f"{header}\nfoo,bar\n")
    with pytest.raises(ValueError, match=rf"train.csv:1: header .* has no {missing} column"):
        data.read_classification_file(path)


def test_csv_row_with_empty_label_names_its_line(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\ngood film,pos\nbad film,\n")
    with pytest.raises(ValueError, match=r"train.csv:3: empty or missing `label`"):
        data.read_classification_file(path)


def test_label_in_valid_unseen_in_train(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")
    valid = write(tmp_path / "valid.csv", "text,label\nmeh,neutral\nok,pos\n")
    with pytest.raises(ValueError, match=r"valid file .*valid.csv: label\(s\) \['neutral'\] never occur "
                                         r"in the training data \(training labels: \['neg', 'pos'\]\)"):
        data.load_classification_files(train, valid)


def test_label_in_test_unseen_in_train(tmp_path):
    train = write(tmp_path / "train.jsonl", '{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    test = write(tmp_path / "test.jsonl", '{"text": "great", "label": 2}\n')
    with pytest.raises(ValueError, match=r"test file .*test.jsonl: label\(s\) \['2'\] never occur"):
        data.load_classification_files(train, train, test)


def test_unknown_data_file_format(tmp_path):
    with pytest.raises(ValueError, match=r"train.tsv: unknown format '.tsv'; expected .csv or .jsonl"):
        data.read_classification_file(tmp_path / "train.tsv")


def test_malformed_conll_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "train.txt", "EU B-ORG\nrejects O\n\nGerman\n")
    with pytest.raises(ValueError, match=r"train.txt:4: malformed line 'German': expected a token and an NER tag"):
        data.read_conll(path)


def test_conll_invalid_tag(tmp_path):
    path = write(tmp_path / "train.txt", "EU B-ORG\nrejects X-VERB\n")
    with pytest.raises(ValueError, match=r"train.txt:2: invalid tag 'X-VERB': expected O, B-TYPE or I-TYPE"):
        data.read_conll(path)


def test_conll_iob1_continuation(tmp_path):
    path = write(tmp_path / "train.txt", "EU I-ORG\nrejects O\n")
    with pytest.raises(ValueError, match=r"train.txt:1: tag 'I-ORG' after 'O' does not continue an? ORG entity"):
        data.read_conll(path)


def test_empty_conll_file(tmp_path):
    path = write(tmp_path / "train.txt", "-DOCSTART- O\n\n")
    with pytest.raises(ValueError, match=r"train.txt: empty file \(no sentences\)"):
        data.read_conll(path)


def test_conll_entity_type_unseen_in_train(tmp_path):
    train = write(tmp_path / "train.txt", "EU B-ORG\nrejects O\n")
    valid = write(tmp_path / "valid.txt", "Peter B-PER\n")
    with pytest.raises(ValueError, match=r"valid file .*valid.txt: label\(s\) \['B-PER'\] never occur"):
        data.load_conll_files(train, valid)


# ---- over-long text: truncated with a warning, never an index error -----------------------------
def test_text_longer_than_max_positions_is_truncated_with_a_warning():
    from models.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_folder()
    # the real embeddings and first layer: the position limit lives in the embeddings, and one
    # layer of 512 tokens costs a sixth of six
    model = BertModel.from_pretrained(num_hidden_layers=1)
    long_text = " ".join(["unbelievably"] * 400)  # several sub-words each: far beyond 512 tokens
    with pytest.warns(UserWarning) as caught:
        enc = tokenizer.encode([long_text, "short"], max_length=4096)
    messages = " ".join(str(w.message) for w in caught)
    assert "max_length=4096 exceeds the model's 512 positions" in messages
    assert "1 of 2 examples were longer than max_length=512 tokens and were truncated" in messages
    assert enc["input_ids"].shape == (2, 512)
    with mg.no_grad():
        h = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).last_hidden_state
    assert h.shape == (2, 512, model.config.hidden_size) and np.isfinite(h.data).all()


def test_tokenizer_given_one_string_instead_of_a_list():
    from models.tokenizer import Tokenizer

    with pytest.raises(TypeError, match=r"encode: texts must be a list of strings, got one str"):
        Tokenizer.from_folder().encode("a film")


# ---- training: a non-finite loss stops with the step number and the op ---------------------------
def test_non_finite_loss_names_the_step_and_the_op(tmp_path):
    mg.manual_seed(0)
    model = prepare_model(BertForSequenceClassification(tiny_config(), num_labels=2), "lora",
                          lora.LoraConfig(r=2, lora_alpha=4))
    ids = [np.array([1, 5, 6, 2], np.int32), np.array([1, 7, 2], np.int32)]
    train = Encoded(ids, [np.zeros(len(x), np.int8) for x in ids], [0, 1])
    args = argparse.Namespace(lr=1e-3, weight_decay=0.0, batch_size=2, epochs=1, warmup_ratio=0.0,
                              max_grad_norm=1.0, patience=1, seed=0, quiet=True)
    trainer = Trainer(model, train, train, args, None, "accuracy", str(tmp_path), "lora")
    trainer.train_step(np.array([0, 1]))
    # a weight that has blown up: the classifier turns finite features into NaN logits
    model.classifier.weight.data[:] = np.inf
    with pytest.raises(FloatingPointError,
                       match=r"loss is nan at step 1 \(epoch 0\); detect_anomaly: Linear forward "
                             r"produced NaN .* shapes \(2, 16\), \(2, 16\), \(2,\)"):
        with np.errstate(invalid="ignore"):
            trainer.train_step(np.array([0, 1]))


# ---- the command line ---------------------------------------------------------------------------
def test_output_folder_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")  # tests run as root: only this stops a mkdir
    out = blocker / "out"
    with pytest.raises(SystemExit, match=rf"--out {out}: the output folder is not writable"):
        cli.check_output_dir(str(out))


def test_train_file_without_valid_file():
    args = cli.build_parser("classify", ("rotten_tomatoes",), "rotten_tomatoes").parse_args(
        ["--train", "mine.csv"])
    with pytest.raises(SystemExit, match=r"tasks.classify: --train needs --valid as well"):
        cli.finish_args(args, "classify")


def test_valid_or_test_file_without_train_file():
    """They were ignored: the run trained and was scored on the preset, not on the user's files."""
    parser = cli.build_parser("classify", ("rotten_tomatoes",), "rotten_tomatoes")
    for files in (["--valid", "v.csv"], ["--test", "t.csv"]):
        with pytest.raises(SystemExit, match=r"tasks.classify: --valid and --test go with --train; "
                                             r"without it the preset 'rotten_tomatoes' gives"):
            cli.finish_args(parser.parse_args(files), "classify")


def test_unknown_training_method():
    with pytest.raises(ValueError, match=r"unknown method 'prefix': expected head, lora or full"):
        prepare_model(BertForSequenceClassification(tiny_config(), num_labels=2), "prefix")


def test_lora_targets_that_match_nothing():
    model = BertForSequenceClassification(tiny_config(), num_labels=2)
    with pytest.raises(ValueError, match=r"apply_lora: no Linear module matches target_modules=\('qkv',\); "
                                         r"Linear modules are e.g. \['bert.encoder"):
        lora.apply_lora(model, lora.LoraConfig(target_modules="qkv"))


def test_missing_data_file():
    with pytest.raises(FileNotFoundError, match=r"nowhere.csv: no such file"):
        data.read_classification_file(os.path.join("no", "such", "nowhere.csv"))
